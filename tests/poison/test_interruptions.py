"""Every way the engine hands an item back without applying an answer is counted and bounded:
lease expiry (rescuer), an engine error while applying (worker), an executor invocation's deadline.
Deterministic: a real database, the production rescuer, worker and SQL functions; the lease is
expired by moving its clock, and the engine error is a fault injected in the real database."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from pgqueue.db.pool import open_pool
from pgqueue.queue import interrupts
from pgqueue.queue.rescuer import Rescuer
from pgqueue.store import queue
from tests.compat.conftest import Server, start_server
from tests.sql.test_flow_control import _function, _runs


def _expire(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE pgqueue.queue_items SET lease_expires_at = now() - interval '1 second' WHERE state = 'leased'")


async def test_a_call_that_keeps_outliving_its_lease_fails_with_lease_expired(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        fn = _function(conn, "outlives")
        [run_id] = _runs(conn, fn, 1, max_attempts=3)
        # Something listens for failures (as an onFailure handler would), so the failure is emitted.
        conn.execute("INSERT INTO pgqueue.pause_paths (event_name, match_path)"
                     " VALUES ('inngest/function.failed', '*')")
    pool = await open_pool(database_url, max_size=4)
    rescuer = Rescuer(pool, backoff_scale=0)
    try:
        for n in range(1, interrupts.MAX_INTERRUPTS + 1):
            async with pool.connection() as conn:
                [item] = await queue.claim(conn, f"worker-{n}", 1, 30_000)
            assert item.attempt == 0  # an interruption is not the app's failure: no attempt used
            with psycopg.connect(database_url, autocommit=True) as conn:
                _expire(conn)
            assert (await rescuer.run_once()).rescued == 1
        async with pool.connection() as conn:
            assert await queue.claim(conn, "worker-late", 1, 30_000) == []
    finally:
        await pool.close()
    with psycopg.connect(database_url) as conn:
        status, error = conn.execute("SELECT status::text, error FROM pgqueue.runs WHERE id = %s", (run_id,)).fetchone()
        failed_events = conn.execute(
            "SELECT count(*) FROM pgqueue.events WHERE name = 'inngest/function.failed' AND data->>'run_id' = %s",
            (run_id,)).fetchone()
        view = conn.execute("SELECT error_name FROM pgqueue.recent_failures WHERE run_id = %s", (run_id,)).fetchone()
        items = conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE run_id = %s", (run_id,)).fetchone()
    assert status == "failed" and error["name"] == "LeaseExpired", error
    assert failed_events == (1,) and view == ("LeaseExpired",) and items == (0,)


async def test_a_rescuer_dying_while_failing_the_run_hands_it_over_again(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        fn = _function(conn, "outlives-twice")
        [run_id] = _runs(conn, fn, 1)
        conn.execute("SELECT * FROM pgqueue.claim_v4('w', 1, 30000)")
        conn.execute("UPDATE pgqueue.queue_items SET interrupts = %s", (interrupts.MAX_INTERRUPTS - 1,))
        _expire(conn)
        # The rescue that finds the budget spent keeps the item leased for its caller; that caller
        # dies here, before failing the run (its rows are dropped).
        [row] = conn.execute("SELECT exhausted FROM pgqueue.rescue_expired_v2(10, %s, 0)",
                             (interrupts.MAX_INTERRUPTS,)).fetchall()
        assert row == (True,)
        _expire(conn)
    pool = await open_pool(database_url, max_size=2)
    try:
        await Rescuer(pool, backoff_scale=0).run_once()
    finally:
        await pool.close()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status::text, error->>'name' FROM pgqueue.runs WHERE id = %s",
                            (run_id,)).fetchone() == ("failed", "LeaseExpired")


async def test_the_claim_that_starts_a_run_schedules_its_finish_timeout(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        fn = _function(conn, "finish-in-claim", {"timeouts": {"finish": "90s"}})
        conn.execute("UPDATE pgqueue.functions SET finish_timeout_ms = 90000 WHERE id = %s", (fn,))
        [run_id] = _runs(conn, fn, 1)
        # The claim alone (a worker that dies right after it does nothing more) schedules it.
        conn.execute("SELECT * FROM pgqueue.claim_v4('w', 1, 30000)")
        rows = conn.execute(
            "SELECT kind, round(extract(epoch FROM run_at - now())) FROM pgqueue.queue_items "
            "WHERE run_id = %s AND step_id = '$finish-timeout'", (run_id,)).fetchall()
    assert rows == [("timeout", 90)]


# --- an engine error on every apply, end to end ------------------------------------------------------

CALLS: list[float] = []


class StepApp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        CALLS.append(time.time())
        step = "engine-poison" if request["event"]["data"].get("bad") else "fine"
        body = json.dumps([{"op": "StepRun", "id": step, "name": step, "data": 1}]).encode()
        if step in (request.get("steps") or {}):
            body, status = b'"done"', 200
        else:
            status = 206
        self.send_response(status)
        self.send_header("X-Inngest-SDK", "inngest-py:v0.5.19")
        self.send_header("X-Inngest-Req-Version", "2")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def faulty(database_url: str) -> Iterator[Server]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A fault in the real database: storing this one step always fails, as a bug would.
        conn.execute("""
            CREATE FUNCTION public.inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.step_id = 'engine-poison' THEN RAISE EXCEPTION 'injected fault'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER inject_fault BEFORE INSERT ON pgqueue.steps
            FOR EACH ROW EXECUTE FUNCTION public.inject_fault();
        """)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StepApp)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    server = start_server(database_url)
    r = httpx.post(f"{server.url}/fn/register", json={
        "appName": "faulty", "url": base, "sdk": "py:v0.5.19",
        "functions": [{"id": "faulty-fn", "name": "fn", "triggers": [{"event": "faulty/go"}],
                       "steps": {"step": {"id": "step", "name": "step",
                                          "runtime": {"type": "http", "url": f"{base}?fnId=faulty-fn&stepId=step"},
                                          "retries": {"attempts": 3}}}}]})
    assert r.status_code == 200, r.text
    yield server
    server.proc.terminate()
    httpd.shutdown()


def test_an_engine_error_on_every_apply_fails_the_run_with_engine_error(faulty: Server) -> None:
    CALLS.clear()
    bad = faulty.send("faulty/go", {"bad": True})
    good = faulty.send("faulty/go", {"bad": False})
    [run] = faulty.wait_runs(bad, timeout=30)
    assert run["status"] == "Failed" and run["error"]["name"] == "EngineError", run
    assert "injected fault" in run["error"]["message"]
    [healthy] = faulty.wait_runs(good, timeout=10)
    assert healthy["status"] == "Completed"
    # one call per interruption for the bad run, two calls for the healthy one
    assert len(CALLS) == interrupts.MAX_INTERRUPTS + 2
