"""Advisory-locked, forward-only migrator.

Numbered files in sql/migrations run once each, in order, inside one transaction that holds a
transaction-scoped advisory lock, so concurrent `pgqueue migrate` calls serialise and the second is
a no-op. The CREATE OR REPLACE files in sql/functions and sql/views are re-applied every time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg

from pgqueue.db.sqldir import sql_dir
from pgqueue.errors import SchemaNotReady

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# 64-bit key derived from a fixed name; xact-scoped so poolers never keep it.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('pgqueue.migrate', 0))"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class MigrateResult:
    applied: tuple[int, ...]
    version: int


def migrations() -> list[Migration]:
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise RuntimeError(f"migration file {path.name} must be named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {versions}")
    return found


def head_version() -> int:
    return len(migrations())


def _replayable_files() -> list[Path]:
    base = sql_dir()
    return sorted((base / "functions").glob("*.sql")) + sorted((base / "views").glob("*.sql"))


def _execute_file(cur: psycopg.Cursor, path: Path) -> None:
    cur.execute(cast(LiteralString, path.read_text()))


def migrate(conninfo: str) -> MigrateResult:
    """Bring the database to the head version. Safe to run twice or concurrently.

    Raises SchemaNotReady when the database was migrated by a newer pgqueue.
    """
    with psycopg.connect(conninfo, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute(_LOCK_SQL)
        cur.execute("CREATE SCHEMA IF NOT EXISTS pgqueue")
        cur.execute(
            """CREATE TABLE IF NOT EXISTS pgqueue.schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur.execute("SELECT version FROM pgqueue.schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        if done and max(done) > head_version():
            # A newer pgqueue migrated this database: replaying our older function files over its
            # would silently downgrade them, so refuse, as `serve` does.
            raise SchemaNotReady(schema_problem(max(done)) or "")
        applied: list[int] = []
        for migration in migrations():
            if migration.version in done:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            _execute_file(cur, migration.path)
            cur.execute(
                "INSERT INTO pgqueue.schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
        for path in _replayable_files():
            _execute_file(cur, path)
        conn.commit()
    return MigrateResult(tuple(applied), head_version())


# Two statements: a single CASE over to_regclass() still fails to parse when the table is missing.
_TABLE_SQL = "SELECT to_regclass('pgqueue.schema_migrations') IS NOT NULL AS present"
_VERSION_SQL = "SELECT coalesce(max(version), 0) AS version FROM pgqueue.schema_migrations"


def _first(row: Any) -> Any:
    """The first column, whether the connection yields tuples or dicts (the pool uses dict rows)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def current_version(conn: psycopg.Connection) -> int:
    """The highest applied migration; 0 when the database has no pgqueue schema."""
    present = conn.execute(_TABLE_SQL).fetchone()
    if present is None or not _first(present):
        return 0
    row = conn.execute(_VERSION_SQL).fetchone()
    return int(_first(row)) if row is not None else 0


async def current_version_async(conn: psycopg.AsyncConnection) -> int:
    present = await (await conn.execute(_TABLE_SQL)).fetchone()
    if present is None or not _first(present):
        return 0
    row = await (await conn.execute(_VERSION_SQL)).fetchone()
    return int(_first(row)) if row is not None else 0


def schema_problem(version: int) -> str | None:
    """A message naming the fix when the schema is not at head, else None."""
    head = head_version()
    if version == head:
        return None
    if version == 0:
        return "the database has no pgqueue schema: run `pgqueue migrate` (or start with --migrate)"
    if version < head:
        return (
            f"the database schema is at version {version}, this pgqueue needs {head}:"
            " run `pgqueue migrate` (or start with --migrate)"
        )
    return (
        f"the database schema is at version {version}, newer than this pgqueue ({head}):"
        " upgrade pgqueue"
    )


def check_schema(conninfo: str) -> None:
    with psycopg.connect(conninfo) as conn:
        problem = schema_problem(current_version(conn))
    if problem:
        raise SchemaNotReady(problem)
