"""pgqueue.send_event / send_events: events sent from the application's own transaction.

Rollback means the event never existed; commit means it is stored, queued for the runner and the
runner is woken; validation and dedupe match POST /e; a role granted only the sender grant can send
and read nothing. The end-to-end run with the official SDK (and PgBouncer) is in
tests/compat/test_outbox.py.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

import pgqueue
from pgqueue.db.sqldir import sql_dir
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.events import ingest


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, **kwargs)


def event_row(conn: psycopg.Connection[Any], event_id: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT e.name, e.data, e.ts, e.external_id, e.skip_reason, i.event_id IS NOT NULL AS queued"
        " FROM pgqueue.events e LEFT JOIN pgqueue.event_inbox i ON i.event_id = e.id WHERE e.id = %s",
        (event_id,)).fetchone()


def test_rollback_leaves_nothing_and_commit_queues_and_wakes(database_url: str) -> None:
    with connect(database_url, autocommit=True) as listener, connect(database_url) as app:
        listener.execute("LISTEN pgqueue_events")
        with app.transaction(force_rollback=True):
            gone = pgqueue.send_event(app, "shop/order.placed", {"order": 1})
        assert event_row(listener, gone) is None
        with app.transaction():
            app.execute("CREATE TEMP TABLE orders (id int)")
            kept = pgqueue.send_event(app, "shop/order.placed", {"order": 2})
            assert event_row(listener, kept) is None  # not visible before commit
            assert not list(listener.notifies(timeout=0.2, stop_after=1))  # nor announced
        row = event_row(listener, kept)
        assert row is not None and row["name"] == "shop/order.placed" and row["data"] == {"order": 2}
        assert row["queued"] and row["skip_reason"] is None
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == ["pgqueue_events"]


def test_batch_form_keeps_order_and_fields(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        ids = pgqueue.send_events(conn, [
            {"name": "a/one", "data": {"n": 1}},
            {"name": "a/two", "data": {"n": 2}, "user": {"id": "u"}, "v": "2024-01-01.1",
             "ts": 1700000000000},
        ])
        assert len(ids) == 2 and len(set(ids)) == 2
        rows = conn.execute('SELECT e.name, e."user", e.v, e.ts FROM pgqueue.event_inbox i'
                            " JOIN pgqueue.events e ON e.id = i.event_id ORDER BY i.seq").fetchall()
        assert rows == [{"name": "a/one", "user": None, "v": None, "ts": rows[0]["ts"]},
                        {"name": "a/two", "user": {"id": "u"}, "v": "2024-01-01.1", "ts": 1700000000000}]


def test_id_dedupes_for_24_hours_like_the_event_api(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        first = pgqueue.send_event(conn, "pay/charge", {"n": 1}, id="charge-42")
        second = pgqueue.send_event(conn, "pay/charge", {"n": 2}, id="charge-42")
        long_id = "x" * 1000  # hashed: longer than the 200 characters kept as given
        third = pgqueue.send_event(conn, "pay/charge", {}, id=long_id)
        fourth = pgqueue.send_event(conn, "pay/charge", {}, id=long_id)
        assert event_row(conn, first)["queued"] and event_row(conn, third)["queued"]
        for dup in (second, fourth):
            row = event_row(conn, dup)
            assert not row["queued"] and "duplicate event id" in row["skip_reason"]


def test_ts_is_taken_from_the_argument(database_url: str) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    with connect(database_url, autocommit=True) as conn:
        event_id = pgqueue.send_event(conn, "t/x", ts=when)
        assert event_row(conn, event_id)["ts"] == int(when.timestamp() * 1000)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"d": value}
    return value


# (name, data) pairs POST /e refuses or accepts; send_event must decide the same.
CASES: list[tuple[str, Any]] = [
    ("", {}),
    ("   ", {}),
    ("inngest/function.finished", {}),
    ("n" * 512, {}),
    ("n" * 513, {}),
    ("ok", [1, 2]),
    ("ok", "text"),
    ("ok", _deep(127)),
    ("ok", _deep(128)),
    ("ok", {"big": 10**400}),
    ("ok", {"fine": 1.5e308}),
    ("ok", {"blob": "x" * (512 * 1024)}),
    ("ok", {"blob": "x" * (500 * 1024)}),
]


@pytest.mark.parametrize(("name", "data"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_validation_matches_the_event_api(database_url: str, name: str, data: Any) -> None:
    try:
        ingest.normalise_event({"name": name, "data": data}, 0, max_event_bytes=512 * 1024)
        api_accepts = True
    except (InvalidInput, PayloadTooLarge):
        api_accepts = False
    with connect(database_url, autocommit=True) as conn:
        raw = json.dumps(data)  # 10**400 must reach jsonb as a number, not a float
        try:
            conn.execute("SELECT pgqueue.send_event(%s, %s::jsonb)", (name, raw))
            sql_accepts = True
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.ProgramLimitExceeded) as exc:
            sql_accepts = False
            assert str(exc).startswith("the event"), str(exc)
    assert sql_accepts == api_accepts


def test_send_events_names_the_bad_event(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="event 1: `data` must be a JSON"):
            pgqueue.send_events(conn, [{"name": "ok"}, {"name": "bad", "data": [1]}])
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="event 0: `ts` must be an integer"):
            pgqueue.send_events(conn, [{"name": "ok", "ts": "yesterday"}])
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="JSON array"):
            conn.execute("SELECT pgqueue.send_events(%s)", (Jsonb({"name": "x"}),))
        assert conn.execute("SELECT count(*) AS n FROM pgqueue.events").fetchone()["n"] == 0


def test_concurrent_senders_lose_nothing(database_url: str) -> None:
    """1,000 sends in 100 concurrent transactions on 100 connections; a random tenth of the
    transactions roll back. Exactly the committed events exist and are queued."""
    committed: list[str] = []
    rolled_back: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)
    rng = random.Random(7)
    plan = [rng.random() < 0.1 for _ in range(100)]

    def sender(n: int) -> None:
        with connect(database_url) as conn:
            barrier.wait()
            with conn.transaction(force_rollback=plan[n]):
                sent = [pgqueue.send_event(conn, "load/tick", {"sender": n, "i": i}) for i in range(10)]
            with lock:
                (rolled_back if plan[n] else committed).extend(sent)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with connect(database_url, autocommit=True) as conn:
        stored = {r["id"] for r in conn.execute("SELECT id FROM pgqueue.events").fetchall()}
        queued = {r["event_id"] for r in conn.execute("SELECT event_id FROM pgqueue.event_inbox").fetchall()}
    assert len(committed) + len(rolled_back) == 1000 and rolled_back
    assert stored == set(committed) == queued


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_sender_role_can_send_and_read_nothing(database_url: str) -> None:
    role = f"pgqueue_sender_{uuid.uuid4().hex[:8]}"
    script = sql_dir() / "grants" / "sender.sql"
    for _ in range(2):  # idempotent
        subprocess.run(["psql", database_url, "-v", "ON_ERROR_STOP=1", "-v", f"sender={role}", "-q", "-f",
                        str(script)], check=True, capture_output=True)
    with connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    try:
        conninfo = psycopg.conninfo.make_conninfo(database_url, user=role, password="pw")
        with connect(conninfo, autocommit=True) as conn:
            event_id = pgqueue.send_event(conn, "app/signup", {"user": 1})
            assert pgqueue.send_events(conn, [{"name": "app/x"}])
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pgqueue.events")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pgqueue.event_ingest_v1('[]')")
        with connect(database_url, autocommit=True) as admin:
            assert event_row(admin, event_id)["queued"]
    finally:
        with connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
