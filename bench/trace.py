"""A run's trace: how long `trace.load` (the reads and the tree) and a GraphQL `run { trace }` query
take for runs of 10, 100 and 1,000 steps (each with a 4 KiB output, every tenth retried once), and
whether step outputs are read (they are not: a run whose outputs add up to 100 MiB traces as fast).
The runs are seeded as rows, the way the executor stores them; the app runs in-process over ASGI.

Usage: python bench/trace.py [--steps 10,100,1000] [--repeat 50] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from bench.common import database, pct  # noqa: E402
from pgqueue import ids  # noqa: E402
from pgqueue.db.pool import open_pool  # noqa: E402
from pgqueue.runs import trace  # noqa: E402
from pgqueue.settings import Settings  # noqa: E402

QUERY = "query T($id: String!) { run(runID: $id) { status trace { name childrenSpans { name status outputID" \
        " childrenSpans { name status } } } } }"


def seed(url: str, steps: int, output_bytes: int) -> str:
    """A completed run of `steps` sequential steps, as pgqueue stores one: a discovery call per
    step (every tenth failing once first), the step's memo, and the final call."""
    run_id = ids.new_ulid()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with psycopg.connect(url, autocommit=True) as conn:
        app_id = conn.execute(
            "INSERT INTO pgqueue.apps (name, url) VALUES (%s, 'http://127.0.0.1:1/api') RETURNING id",
            (f"bench-{run_id}",)).fetchone()[0]
        fn_id = conn.execute(
            "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES (%s, %s, 'fn',"
            " 'http://127.0.0.1:1/api', '{}') RETURNING id", (app_id, f"bench-{run_id}-fn")).fetchone()[0]
        event_id = ids.new_ulid()
        conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'bench/trace', '{}', 0)",
                     (event_id,))
        conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, output,"
            " created_at, started_at, ended_at) VALUES (%s, %s, %s, ARRAY[%s], 'completed', 5, '1',"
            " %s, %s, %s)",
            (run_id, fn_id, event_id, event_id, t0, t0, t0 + timedelta(seconds=steps + 1)))
        payload = "x" * output_bytes
        attempts, memos = [], []
        for n in range(steps):
            start = t0 + timedelta(seconds=n)
            retried = n % 10 == 9
            if retried:
                attempts.append((run_id, n, "step", 0, "retry", 206, Jsonb({"name": "Error", "message": "x"}),
                                 start, start + timedelta(milliseconds=10)))
            begin = start + timedelta(milliseconds=500 if retried else 0)
            attempts.append((run_id, n, "step", 1 if retried else 0, "ok", 206, None, begin,
                             begin + timedelta(milliseconds=20)))
            memos.append((run_id, f"{n:040x}", f"step-{n}", Jsonb({"data": payload}),
                          begin + timedelta(milliseconds=15)))
        attempts.append((run_id, steps, "step", 0, "ok", 200, None, t0 + timedelta(seconds=steps),
                         t0 + timedelta(seconds=steps, milliseconds=20)))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, status_code,"
                " error, started_at, ended_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", attempts)
            cur.executemany(
                "INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, created_at)"
                " VALUES (%s, %s, %s, 'StepRun', %s, %s)", memos)
        conn.execute("ANALYZE pgqueue.steps")
        conn.execute("ANALYZE pgqueue.attempts")
    return run_id


async def timed(n: int, call: object) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


async def measure(url: str, run_id: str, repeat: int) -> tuple[list[float], list[float], int]:
    pool = await open_pool(url, max_size=2)
    app = create_app(Settings(database_url=url).validated(), run_services=False)
    try:
        async with pool.connection() as conn:
            found = await trace.load(conn, run_id)
            assert found is not None
            spans = sum(1 for _ in found.root.walk())

            async def load() -> None:
                await trace.load(conn, run_id)

            loads = await timed(repeat, load)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:

            async def query() -> None:
                resp = await client.post("/v0/gql", json={"query": QUERY, "variables": {"id": run_id}})
                assert resp.status_code == 200 and "errors" not in resp.json(), resp.text

            queries = await timed(repeat, query)
    finally:
        await pool.close()
    return loads, queries, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with database(args.database_url) as url:
        print(f"{'steps':>6} {'output':>8} {'spans':>6} {'load p50':>9} {'load p95':>9} {'gql p50':>9}"
              f" {'gql p95':>9}")
        cases = [(int(s), 4096) for s in args.steps.split(",")]
        cases.append((100, 1024 * 1024))  # 100 MiB of outputs in one run: never read by the trace
        for steps, size in cases:
            run_id = seed(url, steps, size)
            repeat = max(5, args.repeat // max(1, steps // 100))
            loads, queries, spans = asyncio.run(measure(url, run_id, repeat))
            print(f"{steps:>6} {size // 1024:>6}Ki {spans:>6} {statistics.median(loads):>7.1f}ms "
                  f"{pct(loads, 95):>7.1f}ms {statistics.median(queries):>7.1f}ms {pct(queries, 95):>7.1f}ms")
        print("spans: every span of the tree; gql: POST /v0/gql asking for the trace two levels deep")


if __name__ == "__main__":
    main()
