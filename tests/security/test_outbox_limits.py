"""Issue 22, case 6: the size limit of events and signals sent from SQL (pgqueue.send_event,
send_events, send_signal, sql/functions/outbox.sql and signals.sql) is pgqueue's, not the
caller's. It used to come from the session setting `pgqueue.max_event_bytes`, which any role can
SET: a `pgqueue_sender` login raised it to 100 MB and stored a 2 MB event. Now it is a row of
`pgqueue.limits`, owned by pgqueue's role, which the sender cannot change. Against the database
of a running `pgqueue serve`, with a login in the sender role of sql/grants/sender.sql."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.compat.conftest import Server

REPO = Path(__file__).resolve().parents[2]
BIG = {"blob": "x" * (2 * 1024 * 1024)}  # 2 MB, four times the default limit
MEDIUM = {"blob": "y" * (600 * 1024)}  # over the default 512 KiB

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")


@pytest.fixture
def sender(serve_factory: Callable[..., Server]) -> Iterator[tuple[Server, str]]:
    server = serve_factory()
    role, login = f"pgqueue_sender_{uuid.uuid4().hex[:8]}", f"shop_app_{uuid.uuid4().hex[:8]}"
    argv = ["psql", server.database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"sender={role}",
            "-f", str(REPO / "sql" / "grants" / "sender.sql")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(server.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' IN ROLE {}").format(
            sql.Identifier(login), sql.Identifier(role)))
    try:
        yield server, psycopg.conninfo.make_conninfo(server.database_url, user=login, password="pw")
    finally:
        with psycopg.connect(server.database_url, autocommit=True) as admin:
            admin.execute("UPDATE pgqueue.limits SET value = 524288 WHERE name = 'max_event_bytes'")
            for name in (login, role):
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _stored(server: Server, name: str) -> int:
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.events WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_the_caller_cannot_raise_the_limit_of_what_it_sends(sender: tuple[Server, str]) -> None:
    server, conninfo = sender
    name = f"shop/big-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for how in ("SET pgqueue.max_event_bytes = '100000000'",
                    "SELECT set_config('pgqueue.max_event_bytes', '100000000', false)"):
            conn.execute(how)
            with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is 524288 bytes"):
                conn.execute("SELECT pgqueue.send_event(%s, %s)", (name, Jsonb(BIG)))
            with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is 524288 bytes"):
                conn.execute("SELECT pgqueue.send_events(%s)", (Jsonb([{"name": name, "data": BIG}]),))
            with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is 524288 bytes"):
                conn.execute("SELECT pgqueue.send_signal(%s, %s)", (f"sig-{uuid.uuid4().hex}", Jsonb(BIG)))
        # The limit is pgqueue's to set: the sender may neither change nor read it.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE pgqueue.limits SET value = 100000000 WHERE name = 'max_event_bytes'")
    assert _stored(server, name) == 0

    # pgqueue's own role raises it for everyone (docs/sql.md), and then the same send is taken.
    with psycopg.connect(server.database_url, autocommit=True) as admin:
        admin.execute("UPDATE pgqueue.limits SET value = 1048576 WHERE name = 'max_event_bytes'")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pgqueue.send_event(%s, %s)", (name, Jsonb(MEDIUM)))
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is 1048576 bytes"):
            conn.execute("SELECT pgqueue.send_event(%s, %s)", (name, Jsonb(BIG)))
    assert _stored(server, name) == 1
