"""The migrator against real PostgreSQL: empty → head twice, under the advisory lock, concurrently,
atomically; the schema it leaves (one schema, enums in step with models.py, functions with their own
search_path); and every named query used, defined and valid against that schema."""

from __future__ import annotations

import ast
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from pgqueue import errors, models
from pgqueue.db import migrate
from pgqueue.db.queries import QUERIES
from pgqueue.db.sqldir import sql_dir

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "pgqueue", REPO / "api")


def _rows(url: str, statement: LiteralString, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(statement, params or None).fetchall()]


def _versions(url: str) -> list[tuple[object, ...]]:
    return _rows(url, "SELECT version, name FROM pgqueue.schema_migrations ORDER BY version")


def _head() -> list[tuple[object, ...]]:
    return [(m.version, m.name) for m in migrate.migrations()]


# --- empty → head, twice ------------------------------------------------------------------------------


def test_empty_to_head_then_a_second_run_applies_nothing(empty_database_url: str) -> None:
    first = migrate.migrate(empty_database_url)

    head = migrate.head_version()
    assert head >= 1
    assert first == migrate.MigrateResult(applied=tuple(range(1, head + 1)), version=head)
    assert _versions(empty_database_url) == _head()

    second = migrate.migrate(empty_database_url)

    assert second == migrate.MigrateResult(applied=(), version=head)
    assert _versions(empty_database_url) == _head()
    migrate.check_schema(empty_database_url)  # at head: no complaint


def test_migration_files_are_numbered_from_one_without_gaps_and_say_why() -> None:
    files = sorted(p.name for p in (sql_dir() / "migrations").iterdir())

    assert files, "no migrations shipped"
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", name) for name in files), files
    assert [int(name[:4]) for name in files] == list(range(1, len(files) + 1))
    for migration in migrate.migrations():
        assert migration.path.read_text().startswith("--"), f"{migration.path.name} needs a header comment"


def test_everything_lands_in_schema_pgqueue(empty_database_url: str) -> None:
    def outside() -> set[tuple[object, ...]]:
        # every relation, type and function in a schema other than pgqueue and the system ones
        return set(
            _rows(
                empty_database_url,
                "SELECT 'relation', n.nspname, c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname NOT IN ('pgqueue', 'pg_catalog', 'information_schema')"
                "   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
                " UNION ALL SELECT 'type', n.nspname, t.typname FROM pg_type t"
                " JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname NOT IN ('pgqueue', 'pg_catalog', 'information_schema')"
                "   AND n.nspname NOT LIKE 'pg_toast%'"
                " UNION ALL SELECT 'function', n.nspname, p.proname FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname NOT IN ('pgqueue', 'pg_catalog', 'information_schema')"
                " UNION ALL SELECT 'schema', nspname, '' FROM pg_namespace"
                " UNION ALL SELECT 'extension', extname, '' FROM pg_extension",
            )
        )

    before = outside()
    migrate.migrate(empty_database_url)
    after = outside()

    assert after - before == {("schema", "pgqueue", "")}
    (tables,) = _rows(empty_database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'")
    assert isinstance(tables[0], int) and tables[0] > 1


def test_migrations_are_schema_qualified_and_need_no_search_path(
    empty_database_url: str, pg_admin_url: str
) -> None:
    # With an empty search_path an unqualified CREATE TABLE fails ("no schema has been selected") and an
    # unqualified reference to a pgqueue object is not found: the migrations must name their schema.
    name = psycopg.conninfo.conninfo_to_dict(empty_database_url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = ''").format(sql.Identifier(str(name))))

    result = migrate.migrate(empty_database_url)

    assert result.version == migrate.head_version()
    assert _rows(empty_database_url, "SHOW search_path") == [('""',)]


# --- the advisory lock and concurrency ------------------------------------------------------------------


def test_migrate_waits_for_the_advisory_lock(empty_database_url: str) -> None:
    holder = psycopg.connect(empty_database_url, autocommit=False)
    try:
        holder.execute(migrate._LOCK_SQL)  # what another migrator holds while it works
        outcome: list[object] = []
        worker = threading.Thread(target=lambda: outcome.append(migrate.migrate(empty_database_url)))
        worker.start()
        deadline = time.monotonic() + 10
        while not _rows(
            empty_database_url,
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
        ):
            assert time.monotonic() < deadline, "migrate never queued on the advisory lock"
            assert worker.is_alive(), f"migrate finished while the lock was held: {outcome}"
            time.sleep(0.05)
        assert _rows(empty_database_url, "SELECT to_regnamespace('pgqueue')") == [(None,)]
    finally:
        holder.rollback()  # releases the transaction-scoped lock
        holder.close()
    worker.join(timeout=30)

    assert not worker.is_alive()
    assert outcome == [
        migrate.MigrateResult(tuple(range(1, migrate.head_version() + 1)), migrate.head_version())
    ]
    leftover = _rows(
        empty_database_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    assert leftover == [(0,)], "the lock is transaction-scoped and gone after commit"


def test_concurrent_migrations_apply_each_version_exactly_once(empty_database_url: str) -> None:
    start = threading.Barrier(4)

    def run() -> migrate.MigrateResult:
        start.wait(timeout=10)
        return migrate.migrate(empty_database_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(run) for _ in range(4)]]

    head = migrate.head_version()
    assert all(r.version == head for r in results)
    applied = sorted(v for r in results for v in r.applied)
    assert applied == list(range(1, head + 1)), "each version applied by exactly one migrator"
    assert _versions(empty_database_url) == _head()


# --- forward-only deltas, atomicity, newer schemas ----------------------------------------------------


@pytest.fixture
def extra_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Ship one more migration (head + 1) whose body the test writes."""
    real = migrate.migrations()
    path = tmp_path / f"{len(real) + 1:04d}_extra.sql"
    monkeypatch.setattr(
        migrate, "migrations", lambda: [*real, migrate.Migration(len(real) + 1, "extra", path)]
    )
    yield path


def test_a_new_migration_is_applied_alone_on_top_of_head(database_url: str, extra_migration: Path) -> None:
    extra_migration.write_text("-- test: one more table\nCREATE TABLE pgqueue.extra_things (id int);\n")
    old_head = migrate.head_version() - 1

    with pytest.raises(errors.SchemaNotReady, match="run `pgqueue migrate`"):
        migrate.check_schema(database_url)

    result = migrate.migrate(database_url)

    assert result == migrate.MigrateResult(applied=(old_head + 1,), version=old_head + 1)
    assert _rows(database_url, "SELECT to_regclass('pgqueue.extra_things') IS NOT NULL") == [(True,)]
    assert migrate.migrate(database_url).applied == ()
    migrate.check_schema(database_url)


def test_a_failing_migration_leaves_nothing_behind(empty_database_url: str, extra_migration: Path) -> None:
    extra_migration.write_text(
        "-- test: fails half-way\nCREATE TABLE pgqueue.half_done (id int);\nSELECT 1 / 0;\n"
    )

    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate.migrate(empty_database_url)

    # one transaction: not even the earlier migrations or the version table survive
    assert _rows(empty_database_url, "SELECT to_regnamespace('pgqueue')") == [(None,)]


def test_a_schema_from_a_newer_pgqueue_is_refused(database_url: str) -> None:
    head = migrate.head_version()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgqueue.schema_migrations (version, name) VALUES (%s, 'from_the_future')",
            (head + 1,),
        )

    with pytest.raises(errors.SchemaNotReady, match=r"newer than this pgqueue.*upgrade pgqueue"):
        migrate.check_schema(database_url)
    with pytest.raises(errors.SchemaNotReady, match="upgrade pgqueue"):
        migrate.migrate(database_url)
    assert [v for v, _ in _versions(database_url)] == [*range(1, head + 1), head + 1]


def test_functions_and_views_are_reapplied_on_every_run(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION pgqueue.claim_v1(text, integer, integer, integer)")

    assert migrate.migrate(database_url).applied == ()
    assert _rows(database_url, "SELECT to_regproc('pgqueue.claim_v1') IS NOT NULL") == [(True,)]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "DELETE FROM pgqueue.schema_migrations"
            " WHERE version = (SELECT max(version) FROM pgqueue.schema_migrations)",
            "run `pgqueue migrate`",
        ),
        ("DROP SCHEMA pgqueue CASCADE", "no pgqueue schema: run `pgqueue migrate`"),
    ],
    ids=["behind", "missing"],
)
def test_check_schema_names_the_fix(database_url: str, statement: LiteralString, expected: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statement)

    with pytest.raises(errors.SchemaNotReady) as raised:
        migrate.check_schema(database_url)

    assert expected in raised.value.message
    assert "\n" not in raised.value.message


# --- the schema the migrations leave -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_enum", "py_enum"),
    [("pgqueue.run_status", models.RunStatus), ("pgqueue.item_state", models.ItemState)],
)
def test_python_enums_equal_the_sql_enums(database_url: str, sql_enum: str, py_enum: type[object]) -> None:
    labels = _rows(
        database_url,
        "SELECT enumlabel FROM pg_enum WHERE enumtypid = %s::regtype ORDER BY enumsortorder",
        (sql_enum,),
    )

    assert [label for (label,) in labels] == [member.value for member in py_enum]  # type: ignore[attr-defined]


def test_every_function_in_schema_pgqueue_sets_its_own_search_path(database_url: str) -> None:
    functions = _rows(
        database_url,
        "SELECT p.oid::regprocedure::text, l.lanname, coalesce(p.proconfig, '{}') FROM pg_proc p"
        " JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.pronamespace = 'pgqueue'::regnamespace ORDER BY 1",
    )

    assert {name for name, _, _ in functions} >= {"pgqueue.claim_v1(text,integer,integer,integer)"}, functions
    missing = [
        (name, language)
        for name, language, config in functions
        if language in ("sql", "plpgsql") and not any(str(c).startswith("search_path=") for c in config)  # type: ignore[attr-defined]
    ]
    assert not missing, f"functions without their own SET search_path: {missing}"
    others = [(name, language) for name, language, _ in functions if language not in ("sql", "plpgsql")]
    assert not others, f"unexpected function languages: {others}"


# A SQL-language function's statements are planned again on every call (PostgreSQL 15), a plpgsql
# function's once per session: the ones every claim or completion runs are plpgsql (an empty claim
# cost 1.0 ms with claim_v5 and finish_timeouts_v1 in SQL, 0.35 ms without).
HOT_FUNCTIONS = (
    "pgqueue.claim_v5(text,integer,integer,integer,jsonb,integer)",
    "pgqueue.claim_v6(text,integer,integer,integer,jsonb,integer)",
    "pgqueue.claim_lease_v2(text,integer,integer,integer,boolean,jsonb,integer)",
    "pgqueue.finish_timeouts_v1(text[])",
    "pgqueue.run_context_v1(text)",
    "pgqueue.finish_heard_v1(text)",
    "pgqueue.complete_v1(jsonb,integer,bigint)",
    "pgqueue.complete_v2(jsonb,integer,bigint)",
)


def test_the_functions_on_the_hot_path_keep_their_plans(database_url: str) -> None:
    languages = dict(_rows(
        database_url,
        "SELECT p.oid::regprocedure::text, l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.pronamespace = 'pgqueue'::regnamespace",
    ))

    assert {name: languages.get(name) for name in HOT_FUNCTIONS} == dict.fromkeys(HOT_FUNCTIONS, "plpgsql")


# --- named queries --------------------------------------------------------------------------------------


def _query_references() -> tuple[set[str], list[str]]:
    """Names passed to q("...") or QUERIES["..."] anywhere in pgqueue/ and api/; non-literal uses."""
    used: set[str] = set()
    dynamic: list[str] = []
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            where = path.relative_to(REPO)
            for node in ast.walk(tree):
                arg: ast.expr | None = None
                if (
                    isinstance(node, ast.Call)
                    and node.args
                    and (
                        (isinstance(node.func, ast.Name) and node.func.id == "q")
                        or (isinstance(node.func, ast.Attribute) and node.func.attr == "q")
                    )
                ):
                    arg = node.args[0]
                elif isinstance(node, ast.Subscript) and (
                    (isinstance(node.value, ast.Name) and node.value.id == "QUERIES")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "QUERIES")
                ):
                    arg = node.slice
                if arg is None:
                    continue
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    used.add(arg.value)
                elif path.name != "queries.py":  # the loader itself looks names up by variable
                    dynamic.append(f"{where}:{node.lineno}")
    return used, dynamic


def test_every_named_query_is_used_and_every_used_query_is_defined() -> None:
    used, dynamic = _query_references()

    assert not dynamic, f"queries looked up by a computed name cannot be checked: {dynamic}"
    assert len(used) > 10, "the scan found almost no queries: is the q() convention still in use?"
    assert sorted(used - set(QUERIES)) == [], "used but not defined in sql/queries"
    assert sorted(set(QUERIES) - used) == [], "defined in sql/queries but used nowhere in pgqueue/ or api/"


_PARAM = re.compile(r"%\((\w+)\)[sbt]|%%")


def test_every_named_query_compiles_against_the_schema_without_a_search_path(database_url: str) -> None:
    # PREPARE parses and analyses the statement (tables, columns, functions, types) without running it;
    # an empty search_path proves every object is schema-qualified, as a shared pooler session needs.
    failures: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET search_path = ''")
        for name, query in sorted(QUERIES.items()):
            numbers: dict[str, int] = {}

            def placeholder(match: re.Match[str], numbers: dict[str, int] = numbers) -> str:
                if match.group(0) == "%%":
                    return "%"
                return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

            text = _PARAM.sub(placeholder, query.sql)
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
            if code.lstrip().startswith("SET TRANSACTION"):
                # a utility statement cannot be prepared: run it first in a transaction, rolled back
                try:
                    with conn.transaction(force_rollback=True):
                        conn.execute(sql.SQL(text))  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    failures.append(f"{name}: {str(exc).splitlines()[0]}")
                continue
            statement = sql.SQL("PREPARE {} AS {}").format(
                sql.Identifier(f"check_{name}"),
                sql.SQL(text),  # type: ignore[arg-type]
            )
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                failures.append(f"{name}: {str(exc).splitlines()[0]}")
            else:
                conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(f"check_{name}")))

    assert not failures, "\n".join(failures)


async def test_the_version_reader_used_by_health_handles_missing_schema_and_row_types(
    empty_database_url: str,
) -> None:
    async def read() -> list[int]:
        versions = []
        for factory in (tuple_row, dict_row):
            async with await psycopg.AsyncConnection.connect(empty_database_url, row_factory=factory) as conn:
                versions.append(await migrate.current_version_async(conn))
        return versions

    assert await read() == [0, 0]
    migrate.migrate(empty_database_url)
    assert await read() == [migrate.head_version()] * 2


def test_0009_compacts_stored_keys_exactly_as_python_does(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgqueue import ids

    url = empty_database_url
    every = migrate.migrations()
    monkeypatch.setattr(migrate, "migrations", lambda: every[:8])  # the schema before 0009
    # the functions and views are written for the head schema: replayed once it is reached
    replayable = migrate._replayable_files
    monkeypatch.setattr(migrate, "_replayable_files", lambda: [])
    migrate.migrate(url)
    monkeypatch.setattr(migrate, "_replayable_files", replayable)
    long_key = "ключ-" * 60 + "é"  # 301 characters, multi-byte: the digest is over UTF-8 bytes
    with psycopg.connect(url, autocommit=True) as conn:
        app = conn.execute(
            "INSERT INTO pgqueue.apps (name, url) VALUES ('a', 'http://x') RETURNING id").fetchone()
        fn = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) "
                          "VALUES (%s, 'a-f', 'f', 'http://x', '{}') RETURNING id", (app[0],)).fetchone()  # type: ignore[index]
        for key in (long_key, "short"):
            conn.execute("INSERT INTO pgqueue.idempotency_keys VALUES (%s, %s, 'r', now())", (fn[0], key))  # type: ignore[index]
            conn.execute("INSERT INTO pgqueue.singletons VALUES (%s, %s, 'r')", (fn[0], key))  # type: ignore[index]
            conn.execute("INSERT INTO pgqueue.event_dedupe VALUES (%s, 'e', now())", (key,))
    monkeypatch.setattr(migrate, "migrations", lambda: every)
    assert 9 in migrate.migrate(url).applied
    expected = sorted([ids.compact_key(long_key), "short"])
    assert expected[0].startswith("sha256:") and len(expected[0]) == 71
    tables = (("idempotency_keys", "key"), ("singletons", "key"), ("event_dedupe", "external_id"))
    for table, column in tables:
        stored = _rows(url, sql.SQL("SELECT {} FROM {} ORDER BY 1").format(  # type: ignore[arg-type]
            sql.Identifier(column), sql.Identifier("pgqueue", table)))
        assert [r[0] for r in stored] == expected, table
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO pgqueue.event_dedupe VALUES (%s, 'e2', now())", ("x" * 201,))


def test_0016_carries_a_database_wide_event_limit_over_to_pgqueue_limits(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = empty_database_url
    every = migrate.migrations()
    monkeypatch.setattr(migrate, "migrations", lambda: every[:15])  # the schema before 0016
    replayable = migrate._replayable_files  # written for the head schema: replayed once it is reached
    monkeypatch.setattr(migrate, "_replayable_files", lambda: [])
    migrate.migrate(url)
    monkeypatch.setattr(migrate, "_replayable_files", replayable)
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("ALTER DATABASE {} SET pgqueue.max_event_bytes = '1048576'").format(
            sql.Identifier(name)))
    monkeypatch.setattr(migrate, "migrations", lambda: every)
    assert 16 in migrate.migrate(url).applied
    assert _rows(url, "SELECT name, value FROM pgqueue.limits") == [("max_event_bytes", 1048576)]
    # The setting is read no more: a session that sets it changes nothing.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET pgqueue.max_event_bytes = '10'")
        assert conn.execute("SELECT pgqueue.send_event('x', '{\"a\": 1}')").fetchone()


def test_every_column_holding_a_run_or_event_id_compares_in_the_c_collation(database_url: str) -> None:
    # The history tables are partitioned by ULID in the "C" collation (0017). A join compares in the
    # collation of its sides, and an index of another collation cannot serve it: a run_id column in
    # the default collation made the group commit scan all of queue_items instead of probing it.
    rows = _rows(
        database_url,
        "SELECT c.relname || '.' || a.attname, coalesce(co.collname, '(default)')"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100"
        " WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "   AND a.attnum > 0 AND NOT a.attisdropped"
        "   AND (a.attname ~ '(^|_)(run_id|event_id|event_ids|run_ids)$' OR a.attname IN ('replay_of'))",
    )
    assert len(rows) >= 10, rows  # the check sees the columns

    wrong = sorted(f"{column} ({collation})" for column, collation in rows if collation != "C")

    assert wrong == [], "declare these `text COLLATE \"C\"`: " + ", ".join(wrong)


def test_0017_moves_a_populated_database_into_time_partitions(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pgqueue migrate` converts a database with history: every row lands in the partition of its
    # id's time (or the DEFAULT one), identities continue, old events of newer runs are pinned.
    from datetime import UTC, datetime, timedelta

    from pgqueue import ids

    url = empty_database_url
    every = migrate.migrations()
    monkeypatch.setattr(migrate, "migrations", lambda: every[:16])  # the schema before 0017
    replayable = migrate._replayable_files  # written for the head schema: replayed once it is reached
    monkeypatch.setattr(migrate, "_replayable_files", lambda: [])
    migrate.migrate(url)
    monkeypatch.setattr(migrate, "_replayable_files", replayable)
    now = datetime.now(UTC)
    runs = {}
    with psycopg.connect(url, autocommit=True) as conn:
        app = conn.execute("INSERT INTO pgqueue.apps (name, url) VALUES ('a', 'http://x') RETURNING id").fetchone()
        fn = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) "
                          "VALUES (%s, 'a-f', 'f', 'http://x', '{}') RETURNING id", (app[0],)).fetchone()  # type: ignore[index]
        old_event = ids.new_ulid(int((now - timedelta(days=10)).timestamp() * 1000))
        for days in (10, 3, 0):
            at = now - timedelta(days=days)
            event_id = old_event if days == 10 else ids.new_ulid(int(at.timestamp() * 1000))
            if days != 10:
                conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'a/go', '{}', 0)",
                             (event_id,))
            else:
                conn.execute("INSERT INTO pgqueue.events (id, name, data, ts, external_id) "
                             "VALUES (%s, 'a/go', '{\"n\": 1}', 0, 'ext')", (event_id,))
            run_id = ids.new_ulid(int(at.timestamp() * 1000))
            runs[days] = run_id
            conn.execute("INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts,"
                         " step_count, state_bytes) VALUES (%s, %s, %s, ARRAY[%s], 'running', 3, 1, 10)",
                         (run_id, fn[0], event_id, event_id))  # type: ignore[index]
            conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, op, memo) VALUES (%s, 's1', 'StepRun',"
                         " '{\"data\": 1}')", (run_id,))
            conn.execute("INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, started_at)"
                         " VALUES (%s, 1, 's1', 0, 'ok', now())", (run_id,))
            conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts)"
                         " VALUES (%s, %s, 'call', 'step', 3)", (run_id, fn[0]))  # type: ignore[index]
        # a replay made today of the 10-day-old event, and an id that is no ULID
        runs["replay"] = ids.new_ulid()
        conn.execute("INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts,"
                     " ended_at) VALUES (%s, %s, %s, ARRAY[%s], 'completed', 3, now())",
                     (runs["replay"], fn[0], old_event, old_event))  # type: ignore[index]
        conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES ('legacy-1', 'a/go', '{}', 0)")
        before = {table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(  # type: ignore[arg-type]
            sql.Identifier("pgqueue", table))).fetchone()[0] for table in ("events", "runs", "steps", "attempts")}  # type: ignore[index]
        max_step_seq = conn.execute("SELECT max(seq) FROM pgqueue.steps").fetchone()[0]  # type: ignore[index]

    monkeypatch.setattr(migrate, "migrations", lambda: every)
    assert 17 in migrate.migrate(url).applied

    with psycopg.connect(url, autocommit=True) as conn:
        for table, n in before.items():
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(  # type: ignore[arg-type]
                sql.Identifier("pgqueue", table))).fetchone()[0] == n, table  # type: ignore[index]
            kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass",
                                (f"pgqueue.{table}",)).fetchone()[0]  # type: ignore[index]
            assert kind == "p", table
        # each run is in its own day's partition, with its step and attempt; the odd id in the default
        for days in (10, 3, 0):
            day = (now - timedelta(days=days)).strftime("%Y%m%d")
            where = conn.execute("SELECT tableoid::regclass::text FROM pgqueue.runs WHERE id = %s",
                                 (runs[days],)).fetchone()[0]  # type: ignore[index]
            assert where == f"pgqueue.runs_p{day}t0000"
            steps_where = conn.execute("SELECT tableoid::regclass::text FROM pgqueue.steps WHERE run_id = %s",
                                       (runs[days],)).fetchone()[0]  # type: ignore[index]
            assert steps_where == f"pgqueue.steps_p{day}t0000"
        assert conn.execute("SELECT tableoid::regclass::text FROM pgqueue.events WHERE id = 'legacy-1'"
                            ).fetchone()[0] == "pgqueue.events_default"  # type: ignore[index]
        assert conn.execute("SELECT run_id FROM pgqueue.event_pins WHERE event_id = %s", (old_event,)
                            ).fetchall() == [(runs["replay"],)]
        # the step counters became the steps' own sizes; identities go on after the copied rows
        assert conn.execute("SELECT count(*), sum(size) > 0 FROM pgqueue.steps WHERE run_id = %s",
                            (runs[0],)).fetchone() == (1, True)
        new_seq = conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, op, memo) VALUES (%s, 's2',"
                               " 'StepRun', '{}') RETURNING seq", (runs[0],)).fetchone()[0]  # type: ignore[index]
        assert new_seq > max_step_seq
        assert conn.execute("SELECT count(*) FROM pgqueue.queue_items").fetchone()[0] == 3  # type: ignore[index]
