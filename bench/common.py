"""Shared by the benchmark scripts: one PostgreSQL for a whole run, and percentiles."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from pgqueue.db import embedded, migrate  # noqa: E402


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """The given database, or a throwaway embedded cluster (fsync on), migrated to pgqueue's head."""
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-bench-"))
    pg = None
    try:
        if not url:
            pg = embedded.start(tmp / "pgdata")
            url = pg.url
        migrate.migrate(url)
        yield url
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def pg_settings(url: str) -> dict[str, str]:
    """The settings every table is printed with."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                            "('fsync', 'synchronous_commit', 'server_version', 'shared_buffers')").fetchall()
    return {str(name): str(value) for name, value in rows}
