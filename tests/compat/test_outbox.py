"""The transactional outbox end to end: an application's own transaction sends an event with
`pgqueue.send_event`, and the official Python SDK's function runs for it — in dev, production and
PgBouncer (transaction mode) stacks. A rolled-back transaction's event never existed."""

from __future__ import annotations

import psycopg
import pytest

import pgqueue
from tests.compat.conftest import App, Server

pytestmark = pytest.mark.compat


def test_committed_event_runs_and_rolled_back_event_never_existed(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    # The application's connection: straight to PostgreSQL, or through PgBouncer in that mode.
    with psycopg.connect(server.database_url, prepare_threshold=None) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS orders (id int)")
            conn.execute("INSERT INTO orders VALUES (1)")
            gone = pgqueue.send_event(conn, "compat/three", {"echo": "rolled back"})
        with conn.transaction():
            kept = pgqueue.send_event(conn, "compat/three", {"echo": "committed"})
            [batch] = pgqueue.send_events(conn, [{"name": "compat/three", "data": {"echo": "batch"}}])
    for event_id, echo in ((kept, "committed"), (batch, "batch")):
        [run] = server.wait_runs(event_id, timeout=30)
        assert run["status"] == "Completed", run
        assert run["output"] == {"a": 1, "b": 2, "c": "three", "echo": echo}
    with server.client() as c:
        assert c.get(f"/v1/events/{gone}").status_code == 404
    assert not [e for e in server.get("/v1/events?name=compat/three&limit=500")["data"]
                if e["data"].get("echo") == "rolled back"]
