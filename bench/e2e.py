"""End-to-end benchmark: a no-op 3-step function run through the official Python SDK.

Prints, from one run on one database:
  * the SDK app's own ceiling: the same 4 requests per run sent straight to the app (no pgqueue),
    at 1, 2, 4, 8 and 20 runs in flight; the best of them is the app's ceiling;
  * pgqueue end to end: runs/s from events accepted to runs completed, with adaptive concurrency per
    app on (the default) and off (every app gets PGQUEUE_WORKER_CONCURRENCY calls), the same server
    restarted on the same database and app;
  * latency on an idle system: event accepted -> first step started (p50/p99).

Usage: python bench/e2e.py [--runs 1000] [--latency-samples 200] [--database-url URL]
Without --database-url (or DATABASE_URL) it uses pgqueue's embedded PostgreSQL (fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import database, pct, pg_settings  # noqa: E402
from pgqueue.executor import invoke  # noqa: E402
from pgqueue.executor.transport import AppClient  # noqa: E402
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http  # noqa: E402


def sha1(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


async def app_ceiling(app_url: str, runs: int, in_flight: int) -> float:
    """Drive the app exactly as an executor would (4 calls per run), with no server in between,
    through pgqueue's own HTTP client: httpx's default pool costs the client more CPU per call at
    20 in flight than the app spends, which would measure the client rather than the app."""
    fn_url = f"{app_url}?fnId=bench-noop-3&stepId=step"
    ids = [sha1("one"), sha1("two"), sha1("three")]
    values = [1, 2, 3]
    sem = asyncio.Semaphore(in_flight)

    async def one_run(client: AppClient, i: int) -> None:
        async with sem:
            steps: dict[str, object] = {}
            stack: list[str] = []
            for call in range(4):
                body = {
                    "event": {"name": "bench/noop", "data": {"k": f"c{i}"}, "id": f"c{i}", "ts": 1},
                    "events": [{"name": "bench/noop", "data": {"k": f"c{i}"}, "id": f"c{i}", "ts": 1}],
                    "steps": steps,
                    "ctx": {"run_id": f"run{i}", "attempt": 0, "max_attempts": 1, "disable_immediate_execution": False,
                            "use_api": False, "stack": {"stack": stack, "current": len(stack)}},
                    "version": -1,
                    "use_api": False,
                }
                async with client.call(fn_url, json.dumps(body).encode(), {"content-type": "application/json"}) as r:
                    await r.aread()
                if call < 3:
                    assert r.status_code == 206, r.text
                    steps = {**steps, ids[call]: {"data": values[call]}}
                    stack = [*stack, ids[call]]
                else:
                    assert r.status_code == 200, r.text

    async with invoke.new_client(connect_timeout_s=10, call_timeout_s=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one_run(client, i) for i in range(runs)))
        return runs / (time.perf_counter() - start)


def direct_latency(app_base: str, samples: int) -> list[float]:
    """The baseline of event -> first step: the first call sent straight to the app (no pgqueue),
    from the send until the app stamps the first step, idle like the end-to-end samples."""
    fn_url = f"{app_base}/api/inngest?fnId=bench-noop-3&stepId=step"
    out = []
    with httpx.Client(timeout=30) as c:
        c.post(app_base + "/reset")
        for i in range(samples):
            key = f"d{i}"
            event = {"name": "bench/noop", "data": {"k": key}, "id": key, "ts": 1}
            body = {"event": event, "events": [event], "steps": {},
                    "ctx": {"run_id": f"direct{i}", "attempt": 0, "max_attempts": 1,
                            "disable_immediate_execution": False, "use_api": False,
                            "stack": {"stack": [], "current": 0}},
                    "version": -1, "use_api": False}
            t0 = time.time()
            r = c.post(fn_url, content=json.dumps(body), headers={"content-type": "application/json"})
            assert r.status_code == 206, r.text
            out.append((c.get(app_base + "/first-steps").json()[key] - t0) * 1000)
            time.sleep(0.1)
    return out


def completed(database_url: str) -> int:
    """Runs that ended; a failed one (the bench app never fails) stops the benchmark loudly."""
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT status::text, count(*) FROM pgqueue.runs "  # type: ignore[arg-type]
                                 "WHERE status NOT IN ('queued', 'running') GROUP BY 1").fetchall())
        if rows.get("failed"):
            error = conn.execute("SELECT error FROM pgqueue.runs WHERE status = 'failed' LIMIT 1").fetchone()
            raise RuntimeError(f"{rows['failed']} benchmark runs failed, e.g. {error}")
    return int(sum(rows.values()))


def throughput(server_url: str, database_url: str, runs: int, event: str = "bench/noop") -> float:
    """Send `runs` events in batches of 100; runs/s until all of them completed."""
    before = completed(database_url)
    start = time.perf_counter()
    with httpx.Client(base_url=server_url, timeout=60) as c:
        for offset in range(0, runs, 100):
            batch = [{"name": event, "data": {"k": f"t{offset + i}"}} for i in range(min(100, runs - offset))]
            assert c.post("/e/bench", json=batch).status_code == 200
    while completed(database_url) - before < runs:
        # Each look counts every run: looking every 20 ms took ~10% of PostgreSQL's CPU in this
        # benchmark, from the system measured; 50 ms bounds the error at 1-2% of a run of seconds.
        time.sleep(0.05)
        if time.perf_counter() - start > 600:
            raise TimeoutError("runs did not complete within 10 minutes")
    return runs / (time.perf_counter() - start)


def latency(server_url: str, app_base: str, samples: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as c:
        c.post(app_base + "/reset")
        for i in range(samples):
            key = f"l{i}"
            t0 = time.time()
            assert c.post(f"{server_url}/e/bench", json={"name": "bench/noop", "data": {"k": key}}).status_code == 200
            # The app stamps the first step's start itself; polling slowly keeps the bench from
            # competing with the app for CPU while the sample is in flight.
            time.sleep(0.1)
            deadline = time.monotonic() + 10
            while True:
                seen = c.get(app_base + "/first-steps").json()
                if key in seen:
                    out.append((seen[key] - t0) * 1000)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"first step of sample {i} never started")
                time.sleep(0.05)
            time.sleep(0.1)  # idle between samples
    return out


def ordering(server_url: str, app_base: str, runs: int = 30) -> dict[str, float]:
    """The ordering scenario (issue 26): `runs` runs of three 0.3 s steps under concurrency 2, sent
    at once. Each run's latency (sent -> ended) beside the ideal: with started runs finishing
    first, run k (from 1) ends after ceil(k / limit) x 0.9 s."""
    with httpx.Client(timeout=60) as c:
        c.post(app_base + "/reset")
        sent = time.time()
        events = [{"name": "bench/ordered", "data": {"k": f"o{i}"}} for i in range(runs)]
        assert c.post(f"{server_url}/e/bench", json=events).status_code == 200
        deadline = time.monotonic() + 120
        while len((seen := c.get(app_base + "/ended").json())["ended"]) < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{runs - len(seen['ended'])} ordering runs did not end within 2 minutes")
            time.sleep(0.2)
    lat = sorted((t - sent) * 1000 for t in seen["ended"].values())
    work_ms = 3 * seen["step_s"] * 1000
    ideal = [math.ceil(k / seen["limit"]) * work_ms for k in range(1, runs + 1)]
    return {"order_p50_ms": statistics.median(lat), "order_p99_ms": pct(lat, 99),
            "order_first4_max_ms": lat[3], "order_last_ms": lat[-1],
            "order_ideal_p50_ms": statistics.median(ideal), "order_ideal_p99_ms": pct(ideal, 99),
            "order_ideal_last_ms": ideal[-1]}


IN_FLIGHT_LEVELS = (1, 2, 4, 8, 20)


def measure(database_url: str, runs: int, samples: int) -> dict[str, float]:
    """Start a pgqueue dev server and the SDK bench app on `database_url`; every figure of this
    benchmark in one dict."""
    procs = []
    port, app_port = free_port(), free_port()

    def server(adaptive: bool) -> Any:
        proc = start_process("bench-server", pgqueue_argv("dev", "--port", str(port)),
                             env={"DATABASE_URL": database_url, "PGQUEUE_LOG_LEVEL": "warning",
                                  "PGQUEUE_ADAPTIVE_CONCURRENCY": "1" if adaptive else "0"},
                             url=f"http://127.0.0.1:{port}")
        procs.append(proc)
        wait_http(proc, "/health")
        return proc

    out: dict[str, float] = {}
    try:
        srv = server(adaptive=False)  # the default
        app = start_process(
            "bench-app",
            [sys.executable, "-m", "uvicorn", "bench.bench_app:app", "--port", str(app_port), "--log-level", "warning"],
            env={"INNGEST_DEV": srv.url, "INNGEST_BASE_URL": srv.url},
            url=f"http://127.0.0.1:{app_port}",
        )
        procs.append(app)
        wait_http(app, "/first-steps")
        httpx.put(app.url + "/api/inngest", timeout=30)
        time.sleep(0.5)
        for n in IN_FLIGHT_LEVELS:
            out[f"ceiling_{n}"] = asyncio.run(app_ceiling(app.url + "/api/inngest", 400, n))
        throughput(srv.url, database_url, 100)  # warm-up
        out["runs_per_s"] = throughput(srv.url, database_url, runs)
        lat = latency(srv.url, app.url, samples)
        direct = direct_latency(app.url, samples)
        out.update(ordering(srv.url, app.url))
        srv.terminate()
        srv = server(adaptive=True)  # PGQUEUE_ADAPTIVE_CONCURRENCY=1, same port, same app
        throughput(srv.url, database_url, 100)
        out["runs_per_s_adaptive"] = throughput(srv.url, database_url, runs)
    finally:
        for p in procs:
            p.terminate()
    out["ceiling_best"] = max(out[f"ceiling_{n}"] for n in IN_FLIGHT_LEVELS)
    out["latency_p50_ms"] = statistics.median(lat)
    out["latency_p99_ms"] = pct(lat, 99)
    out["direct_p50_ms"] = statistics.median(direct)
    out["direct_p99_ms"] = pct(direct, 99)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with database(args.database_url) as url:
        out = measure(url, args.runs, args.latency_samples)
        settings = pg_settings(url)
    print(f"PostgreSQL {settings.get('server_version')} fsync={settings.get('fsync')} "
          f"synchronous_commit={settings.get('synchronous_commit')}; 2 cores; one uvicorn worker for the app")
    print(f"{'measure':<56}{'value':>12}")
    for n in IN_FLIGHT_LEVELS:
        print(f"{f'SDK app ceiling, {n} runs in flight (runs/s)':<56}{out[f'ceiling_{n}']:>12.1f}")
    best = out["ceiling_best"]
    for key, label in (("runs_per_s", "fixed concurrency 64 (default)"),
                       ("runs_per_s_adaptive", "adaptive concurrency")):
        print(f"{'pgqueue, ' + label + ', ' + str(args.runs) + ' runs (runs/s)':<56}{out[key]:>12.1f}")
        print(f"{'  ratio to the best ceiling':<56}{out[key] / best:>12.2f}")
        print(f"{'  ratio to ceiling at 20 in flight':<56}{out[key] / out['ceiling_20']:>12.2f}")
    print(f"{'adaptive / fixed':<56}{out['runs_per_s_adaptive'] / out['runs_per_s']:>12.2f}")
    print(f"{'event -> first step p50 (ms), idle':<56}{out['latency_p50_ms']:>12.1f}")
    print(f"{'event -> first step p99 (ms), idle':<56}{out['latency_p99_ms']:>12.1f}")
    print(f"{'first call straight to the app -> first step p50 (ms)':<56}{out['direct_p50_ms']:>12.1f}")
    print(f"{'  pgqueue share of event -> first step, p50 (ms)':<56}"
          f"{out['latency_p50_ms'] - out['direct_p50_ms']:>12.1f}")


if __name__ == "__main__":
    main()
