"""Event matching at scale: events fully processed per second (accepted through POST /e in batches
of 100 and matched by the runner against waits and triggers, measured until the runner has
finished them) with 0, 10,000 and 100,000 pending waits on the same event name, different ids.
The waits are created by real runs through the production pause path (executor + apply).

Usage: python bench/waits.py [--events 5000] [--waits 10000,100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgqueue.db import embedded  # noqa: E402
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http  # noqa: E402


def scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def send(server: str, events: list[dict]) -> None:
    with httpx.Client(base_url=server, timeout=120) as c:
        for i in range(0, len(events), 100):
            r = c.post("/e/bench", json=events[i:i + 100])
            assert r.status_code == 200, r.text


def grow_waits(server: str, url: str, target: int) -> None:
    have = scalar(url, "SELECT count(*) FROM pgqueue.pauses WHERE kind = 'wait'")
    missing = target - have
    if missing <= 0:
        return
    send(server, [{"name": "bench/wait", "data": {"id": f"w{have + i}"}} for i in range(missing)])
    deadline = time.monotonic() + 1800
    while scalar(url, "SELECT count(*) FROM pgqueue.pauses WHERE kind = 'wait'") < target:
        if time.monotonic() > deadline:
            raise TimeoutError("waits were not created in time")
        time.sleep(0.5)


def measure(server: str, url: str, n: int, tag: str) -> float:
    # Same event name as the waits, ids that match none of them: every event is looked up.
    events = [{"name": "bench/resume", "data": {"id": f"{tag}-{i}"}} for i in range(n)]
    start = time.perf_counter()
    send(server, events)
    while scalar(url, "SELECT count(*) FROM pgqueue.event_inbox") > 0:
        time.sleep(0.01)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--waits", default="10000,100000")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-bench-w-"))
    pg = None
    url = args.database_url
    procs = []
    try:
        if not url:
            pg = embedded.start(tmp / "pgdata")
            url = pg.url
        port, app_port = free_port(), free_port()
        server = start_process("bench-server", pgqueue_argv("dev", "--port", str(port)),
                               env={"DATABASE_URL": url, "PGQUEUE_LOG_LEVEL": "warning",
                                    "PGQUEUE_WORKER_CONCURRENCY": "128"},
                               url=f"http://127.0.0.1:{port}")
        procs.append(server)
        wait_http(server, "/health")
        app = start_process("bench-wait-app", [sys.executable, "-m", "uvicorn", "bench.wait_app:app", "--port",
                                               str(app_port), "--log-level", "warning"],
                            env={}, url=f"http://127.0.0.1:{app_port}")
        procs.append(app)
        time.sleep(1.5)
        app_url = f"{app.url}/api/inngest"
        body = {"appName": "bench-waits", "url": app_url, "functions": [
            {"id": "bench-waits-waiter", "name": "waiter", "triggers": [{"event": "bench/wait"}],
             "steps": {"step": {"id": "step", "name": "step",
                                "runtime": {"type": "http", "url": f"{app_url}?fnId=bench-waits-waiter&stepId=step"}}}}]}
        assert httpx.post(f"{server.url}/fn/register", json=body).status_code == 200
        results = [(0, measure(server.url, url, args.events, "w0"))]
        for target in [int(x) for x in args.waits.split(",") if x]:
            grow_waits(server.url, url, target)
            results.append((target, measure(server.url, url, args.events, f"w{target}")))
        base = results[0][1]
        print(f"{args.events} events per measurement, batches of 100, one pgqueue dev process")
        print(f"{'pending waits':>14}{'events/s':>12}{'vs none':>10}")
        for waits, rate in results:
            print(f"{waits:>14}{rate:>12.0f}{rate / base:>10.2f}")
    finally:
        for p in procs:
            p.terminate()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
