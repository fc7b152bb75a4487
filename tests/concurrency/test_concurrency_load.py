"""Concurrency keys under load: 4 worker processes, 500 runs over 10 keys with limit 2, judged
from the start and end times the app itself records (not from the limiter's own view)."""

from __future__ import annotations

import httpx
import pytest

from tests.compat.conftest import start_server, sync_via_put
from tests.compat.test_python_flow_control import FLOW_FUNCTIONS, max_overlap, spans, start_flow_app
from tests.helpers.procs import pgqueue_argv, start_process, wait_until

pytestmark = pytest.mark.slow


def test_four_workers_never_exceed_two_per_key(database_url: str) -> None:
    server = start_server(database_url, env={"PGQUEUE_WORKER_CONCURRENCY": "16"})
    workers = [
        start_process(f"pgqueue-worker-{i}", pgqueue_argv("worker"),
                      env={"DATABASE_URL": database_url, "PGQUEUE_POLL_INTERVAL_MS": "100",
                           "PGQUEUE_WORKER_CONCURRENCY": "16", "PGQUEUE_LEASE_MS": "10000"},
                      url=server.url)
        for i in range(3)
    ]
    app = start_flow_app(server)
    try:
        sync_via_put(app, server, expect_functions=FLOW_FUNCTIONS)
        events = [{"name": "flow/conc", "data": {"key": f"k{i % 10}", "n": i, "seconds": 0.03}} for i in range(500)]
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for chunk in range(0, 500, 100):
                assert c.post("/e/key", json=events[chunk:chunk + 100]).status_code == 200
        wait_until(lambda: len(spans(app, "conc-key")) >= 500, timeout=240, interval=0.5, message="500 runs")
        recorded = spans(app, "conc-key")
        assert len({s["run_id"] for s in recorded}) == 500
        per_key: dict[str, list[tuple[float, float]]] = {}
        for s in recorded:
            per_key.setdefault(s["key"], []).append((s["start"], s["end"]))
        overlaps = {k: max_overlap(v) for k, v in per_key.items()}
        assert len(overlaps) == 10
        assert max(overlaps.values()) <= 2, overlaps
        assert min(overlaps.values()) == 2  # the limit was actually reached (work did run in parallel)

        def completed() -> int:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                done = c.get("/v1/runs", params={"status": "Completed", "limit": 500}).json()["data"]
            return len([r for r in done if r["function_slug"] == "py-flow-conc-key"])

        wait_until(lambda: completed() == 500, timeout=60, interval=0.5, message="500 completed runs")
    finally:
        app.proc.terminate()
        for w in workers:
            w.terminate()
        server.proc.terminate()
