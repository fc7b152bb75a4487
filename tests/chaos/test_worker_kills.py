"""kill -9 of worker processes at random moments during 1,000 three-step runs: every run completes,
nothing is lost, and no step runs again after its output was stored (from the app's own ledger).

A step's output, the completion of its queue item and the next item are written in one
transaction, so there is no moment "between a stored output and the next item" to crash in."""

from __future__ import annotations

import random
import time

import httpx
import psycopg
import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, SIGNING_KEY, start_py_app, start_server, sync_via_put
from tests.helpers.procs import Proc, pgqueue_argv, start_process, wait_until

pytestmark = pytest.mark.slow
RUNS = 1000


def _worker(database_url: str, n: int) -> Proc:
    return start_process(f"pgqueue-worker-{n}", pgqueue_argv("worker"),
                         env={"DATABASE_URL": database_url, "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
                              "PGQUEUE_ALLOW_LOOPBACK": "1",  # a worker with a key calls as production
                              "PGQUEUE_LEASE_MS": "3000", "PGQUEUE_POLL_INTERVAL_MS": "200",
                              "PGQUEUE_BACKOFF_SCALE": "0.002", "PGQUEUE_WORKER_CONCURRENCY": "32"},
                         url="")


def test_kill_9_workers_during_1000_runs(database_url: str) -> None:
    rng = random.Random(11)
    server = start_server(database_url, mode="serve", extra_args=("--no-workers",))
    app = start_py_app(server)
    workers = [_worker(database_url, 0), _worker(database_url, 1)]
    kills = 0
    try:
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        events = [{"name": "compat/durable", "data": {"n": i, "delay": round(rng.uniform(0.0, 0.05), 3)}}
                  for i in range(RUNS)]
        with server.client() as c:
            for i in range(0, RUNS, 250):
                assert c.post(f"/e/{server.event_key}", json=events[i:i + 250]).status_code == 200

        def completed() -> int:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT count(*) FROM pgqueue.runs WHERE status = 'completed'").fetchone()
            return int(row[0]) if row else 0

        deadline = time.monotonic() + 300
        while completed() < RUNS and time.monotonic() < deadline and kills < 12:
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.randrange(len(workers))
            workers[victim].kill9()
            kills += 1
            workers[victim] = _worker(database_url, victim)
        wait_until(lambda: completed() == RUNS, timeout=120, interval=1, message=f"{RUNS} completed runs")
        assert kills >= 3

        with psycopg.connect(database_url) as conn:
            stored = {(r[0], r[1]): float(r[2]) for r in conn.execute(
                "SELECT run_id, name, extract(epoch FROM created_at) FROM pgqueue.steps").fetchall()}
            statuses = dict(conn.execute("SELECT status::text, count(*) FROM pgqueue.runs GROUP BY 1").fetchall())
        assert statuses == {"completed": RUNS}
        assert len(stored) == 3 * RUNS
        ledger = httpx.get(app.base + "/ledger", timeout=30).json()["ledger"]
        reruns_after_store = [
            key for key, times in ledger.items()
            for t in times if t > stored[tuple(key.rsplit(":", 1))]  # type: ignore[index]
        ]
        assert reruns_after_store == []
        assert sum(len(t) for t in ledger.values()) >= 3 * RUNS
    finally:
        for w in workers:
            w.terminate()
        app.proc.terminate()
        server.proc.terminate()
