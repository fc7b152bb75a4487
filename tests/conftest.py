"""Session PostgreSQL for the whole suite.

DATABASE_URL (or PGQUEUE_TEST_DATABASE_URL) if set, else a throwaway cluster from the local
PostgreSQL binaries (pgqueue's own embedded starter, which also copes with running as root).
A template database is migrated once; each test that needs a database gets a fresh copy.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgqueue.db import embedded, migrate

TEMPLATE = "pgqueue_template"
_counter = itertools.count()


def _with_db(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    given = os.environ.get("PGQUEUE_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="pgqueue-test-pg-"))
    pg = embedded.start(
        folder / "data",
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "400"},
    )
    try:
        yield pg.admin_url("postgres")
    finally:
        pg.stop(mode="immediate", force=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(pg.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate.migrate(_with_db(pg_admin_url, TEMPLATE))
    return TEMPLATE


def create_database(admin_url: str, template: str | None) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_db(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


@pytest.fixture
def database_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    url = create_database(pg_admin_url, template_db)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with no pgqueue schema."""
    url = create_database(pg_admin_url, None)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def module_database_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database shared by one test module."""
    url = create_database(pg_admin_url, template_db)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def pgbouncer(pg_admin_url: str) -> Iterator[object]:
    """PgBouncer in transaction mode in front of the session cluster (started on first use)."""
    from tests.helpers import pgbouncer as bouncer

    running = bouncer.start(pg_admin_url)
    yield running
    running.stop()
