"""Queue benchmark: pgqueue's own enqueue and claim-to-complete paths with no-op job bodies.

  * enqueue: pgqueue.run_create_v1 (what the runner calls to queue runs), batches of 1,000 and one
    run per call;
  * drain: the production Worker (claim_v6 batches, leases, heartbeats) completing every item
    through the production Executor.record (the group commit, pgqueue.complete_v1); only the job
    body, the HTTP call to the app, is replaced by an immediate `the function returned null`;
  * flow control: the same drain with a concurrency limit of 1 over 1,000 keys, and a throttle;
  * many functions: the same drain with the runs spread over 200 functions, and the claim's own
    cost per item claimed (the production claim function alone, timed inside the server) with the
    runs of one function and of 200 functions, and the ratio of the two;
  * scale: the same drain with 1,000,000 other items queued, and with 100,000 pending waits.

Usage: python bench/queue_throughput.py [--items 10000] [--workers 2] [--batch 100] [--functions 200]
       [--scale] [--database-url URL]
Without a URL it starts pgqueue's embedded PostgreSQL (fsync on). Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import peers  # noqa: E402
from bench.common import database, pct, pg_settings  # noqa: E402
from bench.peers import raw as raw_peer  # noqa: E402
from pgqueue.db.notify import QUEUE_CHANNEL, Listener, Wakeup  # noqa: E402
from pgqueue.db.pool import open_pool  # noqa: E402
from pgqueue.db.queries import q  # noqa: E402
from pgqueue.executor.execute import Executor  # noqa: E402
from pgqueue.models import QueueItem  # noqa: E402
from pgqueue.protocol.outcome import RunDone  # noqa: E402
from pgqueue.queue.rescuer import Rescuer  # noqa: E402
from pgqueue.queue.worker import Worker  # noqa: E402


def _bench_function(conn: psycopg.Connection) -> uuid.UUID:
    app = conn.execute("INSERT INTO pgqueue.apps (name, url) VALUES ('bench', 'http://127.0.0.1:9') "
                       "ON CONFLICT (name) DO UPDATE SET url = excluded.url RETURNING id").fetchone()
    fn = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES "
                      "(%s, %s, 'bench', 'http://127.0.0.1:9', '{}') RETURNING id",
                      (app[0], f"bench-{uuid.uuid4().hex[:8]}")).fetchone()  # type: ignore[index]
    conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES ('bench-ev', 'b/x', '{}', 0) "
                 "ON CONFLICT DO NOTHING")
    return fn[0]  # type: ignore[index]


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        # functions too: a case with one function must not find the many of an earlier case
        conn.execute("TRUNCATE pgqueue.functions, pgqueue.queue_items, pgqueue.runs, pgqueue.gcra_state, "
                     "pgqueue.events, pgqueue.event_inbox, pgqueue.pauses CASCADE")


def seed(url: str, items: int, *, keys: int = 0, throttle: bool = False, per_call: int = 1000,
         functions: int = 1) -> float:
    """Queue `items` runs through run_create_v1, `per_call` per call, taking turns over `functions`
    functions; returns runs queued per second."""
    with psycopg.connect(url, autocommit=True) as conn:
        fns = [_bench_function(conn) for _ in range(functions)]
        prefix = uuid.uuid4().hex[:6]
        start = time.perf_counter()
        for first in range(0, items, per_call):
            runs = []
            for i in range(first, min(items, first + per_call)):
                fn = fns[i % functions]
                run = {"id": f"r{prefix}{i:08d}", "function_id": str(fn), "event_id": "bench-ev",
                       "event_ids": ["bench-ev"], "max_attempts": 1}
                if keys:
                    run.update(ckeys=[f"fn:bench:{i % keys}"], climits=[1])
                if throttle:
                    run.update(throttle_key="throttle:bench:", throttle={"limit": 1_000_000, "period_ms": 1000,
                                                                          "burst": 1_000_000})
                runs.append(run)
            conn.execute("SELECT pgqueue.run_create_v1(%s::jsonb)", (json.dumps(runs),))
        rate = items / (time.perf_counter() - start)
        conn.execute("VACUUM ANALYZE pgqueue.queue_items")
    return rate


def seed_backlog(url: str, items: int) -> None:
    """Set-based set-up (not measured): `items` due runs of another function, queued ahead."""
    with psycopg.connect(url, autocommit=True) as conn:
        fn = _bench_function(conn)
        conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, max_attempts) "
            "SELECT 'b' || lpad(g::text, 9, '0'), %s, 'bench-ev', ARRAY['bench-ev'], 1 FROM generate_series(1, %s) g",
            (fn, items))
        conn.execute("ANALYZE pgqueue.runs")  # stale statistics make each foreign-key check a scan
        conn.execute(
            "INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, run_at) "
            "SELECT 'b' || lpad(g::text, 9, '0'), %s, 'call', 'step', 1, now() - interval '1 minute' "
            "FROM generate_series(1, %s) g", (fn, items))
        conn.execute("VACUUM ANALYZE pgqueue.runs")
        conn.execute("VACUUM ANALYZE pgqueue.queue_items")


def seed_waits(url: str, waits: int) -> None:
    """Set-based set-up (not measured): `waits` runs parked on wait_for_event, each with its pause
    and its timeout item a day ahead, as the executor leaves them."""
    with psycopg.connect(url, autocommit=True) as conn:
        fn = _bench_function(conn)
        conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, started_at, max_attempts) "
            "SELECT 'w' || lpad(g::text, 9, '0'), %s, 'bench-ev', ARRAY['bench-ev'], 'running', now(), 1 "
            "FROM generate_series(1, %s) g", (fn, waits))
        conn.execute("ANALYZE pgqueue.runs")
        conn.execute(
            "INSERT INTO pgqueue.pauses (run_id, kind, step_id, step_name, event_name, match_path, match_value, "
            "expires_at) SELECT 'w' || lpad(g::text, 9, '0'), 'wait', 'wait', 'wait', 'bench/approved', 'data.id', "
            "to_jsonb('w' || g), now() + interval '1 day' FROM generate_series(1, %s) g", (waits,))
        conn.execute(
            "INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, run_at) "
            "SELECT 'w' || lpad(g::text, 9, '0'), %s, 'timeout', 'wait', 1, now() + interval '1 day' "
            "FROM generate_series(1, %s) g", (fn, waits))
        conn.execute("VACUUM ANALYZE pgqueue.runs")
        conn.execute("VACUUM ANALYZE pgqueue.queue_items")
        conn.execute("VACUUM ANALYZE pgqueue.pauses")


async def drain(pool: AsyncConnectionPool, items: int, workers: int, batch: int) -> float:
    """The production worker (claim_v6 batches, leases, heartbeats) and the production completion
    (Executor.record: the group commit through complete_v1); only the job body, the HTTP call to
    the app, is replaced by an immediate `the function returned null`."""
    executor = Executor(pool, httpx.AsyncClient(), signing_key=None)
    done = asyncio.Event()
    finished = 0

    async def body(item: QueueItem) -> None:
        nonlocal finished
        await executor.record(item, RunDone(output=None, request_version=None), started_at=datetime.now(UTC))
        finished += 1
        if finished >= items:
            done.set()

    fleet = [Worker(pool, body, wakeup=Wakeup(), concurrency=batch * 2, claim_batch=batch, poll_interval_s=0.05,
                    fn_default_limit=1_000_000, name=f"bench-{n}") for n in range(workers)]
    # The production rescuer beside them, as in every pgqueue process: it also sweeps concurrency-
    # parked items whose unpark was missed (without it a rare lost unpark stalled a keyed drain).
    rescuer = Rescuer(pool, interval_s=1.0)
    start = time.perf_counter()
    rescuer.start()
    for w in fleet:
        w.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        elapsed = time.perf_counter() - start
        for w in fleet:
            await w.stop(5)
        await rescuer.stop()
        await executor.client.aclose()
    return items / elapsed


# Drains the queue with committed claims inside the server, timing only the claim statements:
# the claim's own cost, without the client's round trips and scheduling (noisy on a busy machine).
_CLAIM_DRAIN = """
DO $$
DECLARE t0 timestamptz; spent interval := '0'; ids bigint[]; n bigint := 0;
BEGIN
    LOOP
        t0 := clock_timestamp();
        SELECT coalesce(array_agg(c.id), '{{}}') INTO ids
        FROM {claim}('bench-claim', {limit}, 30000, 1000000{no_caps}) c;
        spent := spent + (clock_timestamp() - t0);
        EXIT WHEN cardinality(ids) = 0;
        n := n + cardinality(ids);
        COMMIT;
        DELETE FROM pgqueue.queue_items WHERE id = ANY (ids);  -- as the items' completions would
        COMMIT;
    END LOOP;
    RAISE NOTICE '% %', n, extract(epoch FROM spent) * 1e6 / greatest(n, 1);
END $$
"""


def claim_cost(url: str, items: int, batch: int, functions: int) -> float:
    """Microseconds per item claimed by the production claim (the function the queue_claim query
    calls), draining `items` runs spread over `functions` functions in claims of `batch`."""
    reset(url)
    seed(url, items, functions=functions)
    match = re.search(r"pgqueue\.(claim_v\d+)", q("queue_claim"))
    assert match is not None
    notes: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notes.append(diag.message_primary or ""))
        # claim_v5 on take the adaptive caps (NULL: none) after the four arguments of claim_v4
        no_caps = sql.SQL(", NULL, NULL" if int(match.group(1).removeprefix("claim_v")) >= 5 else "")
        conn.execute(sql.SQL(_CLAIM_DRAIN).format(claim=sql.Identifier("pgqueue", match.group(1)),
                                                  limit=sql.Literal(batch), no_caps=no_caps))
    claimed, per_item_us = notes[-1].split()
    assert int(claimed) == items, (claimed, items)
    return float(per_item_us)


async def start_latency(pool: AsyncConnectionPool, url: str, samples: int) -> list[float]:
    """Run queued (run_create_v1, one per commit) -> the job body starts, one at a time on an idle
    production Worker woken by the production LISTEN/NOTIFY listener; milliseconds."""
    wakeup = Wakeup()
    listener = Listener(url, {QUEUE_CHANNEL: wakeup})
    executor = Executor(pool, httpx.AsyncClient(), signing_key=None)
    started: asyncio.Queue[float] = asyncio.Queue()

    async def body(item: QueueItem) -> None:
        started.put_nowait(time.perf_counter())
        await executor.record(item, RunDone(output=None, request_version=None), started_at=datetime.now(UTC))

    worker = Worker(pool, body, wakeup=wakeup, concurrency=10, claim_batch=10, poll_interval_s=1.0,
                    fn_default_limit=1_000_000, name="bench-latency")
    listener.start()
    await asyncio.wait_for(listener.connected.wait(), 10)
    worker.start()
    out = []
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            fn = await asyncio.to_thread(_function_for_latency, url)
            for i in range(samples):
                await asyncio.sleep(0.02)
                run = [{"id": f"lat{uuid.uuid4().hex[:12]}{i}", "function_id": str(fn), "event_id": "bench-ev",
                        "event_ids": ["bench-ev"], "max_attempts": 1}]
                t0 = time.perf_counter()
                await conn.execute("SELECT pgqueue.run_create_v1(%s::jsonb)", (json.dumps(run),))
                out.append((await asyncio.wait_for(started.get(), 10) - t0) * 1000)
    finally:
        await worker.stop(5)
        await listener.stop()
        await executor.client.aclose()
    return out


def _function_for_latency(url: str) -> uuid.UUID:
    with psycopg.connect(url, autocommit=True) as conn:
        return _bench_function(conn)


async def measure(url: str, items: int, workers: int, batch: int, *, scale: bool = False,
                  samples: int = 100, functions: int = 200) -> dict[str, float]:
    """Every figure of this benchmark, measured in one go on one database."""
    pool = await open_pool(url, max_size=workers * 3 + 2)
    out: dict[str, float] = {}
    try:
        reset(url)
        # as the peers are measured (bench/peers): a tenth of the jobs one per commit, batches of 500
        out["enqueue single"] = seed(url, max(items // 10, 100), per_call=1)
        reset(url)
        out["enqueue batch"] = seed(url, items, per_call=500)
        out["drain"] = await drain(pool, items, workers, batch)
        reset(url)
        latencies = await start_latency(pool, url, samples)
        out["start p50 ms"], out["start p99 ms"] = statistics.median(latencies), pct(latencies, 99)
        for label, kwargs in (("drain, concurrency limit 1 over 1,000 keys", {"keys": 1000}),
                              ("drain, throttle on every start", {"throttle": True}),
                              (f"drain, runs of {functions} functions", {"functions": functions})):
            reset(url)
            seed(url, items, **kwargs)  # type: ignore[arg-type]
            out[label] = await drain(pool, items, workers, batch)
        # The claim alone, one function vs many: three interleaved rounds, the median of each.
        one, many = [], []
        for _ in range(3):
            one.append(claim_cost(url, items, batch, 1))
            many.append(claim_cost(url, items, batch, functions))
        out["claim us/item, 1 function"] = statistics.median(one)
        out[f"claim us/item, {functions} functions"] = statistics.median(many)
        reset(url)
        if scale:
            reset(url)
            seed_waits(url, 100_000)
            seed(url, items)
            out["drain, 100,000 pending waits"] = await drain(pool, items, workers, batch)
            reset(url)
            seed_backlog(url, 1_000_000)
            seed(url, items)
            # claim-to-complete throughput while 1,000,000 items wait (both functions share the
            # workers by fair round robin; every completed item counts)
            out["drain, 1,000,000 queued"] = await drain(pool, items, workers, batch)
            reset(url)
    finally:
        await pool.close()
    return out


async def run(url: str, items: int, workers: int, batch: int, scale: bool, functions: int) -> None:
    out = await measure(url, items, workers, batch, scale=scale, functions=functions)
    claim_one = out.pop("claim us/item, 1 function")
    claim_many = out.pop(f"claim us/item, {functions} functions")
    # the same ceiling bench/run.py prints beside the peers (its own database on this server)
    try:
        ceiling = await asyncio.to_thread(raw_peer.drain, url, items)  # it runs its own event loop
        out["raw SKIP LOCKED ceiling (10 conns, B=50)"] = ceiling["drain_jobs_per_s"]
    finally:
        peers.drop_database(url, raw_peer.DATABASE)
    settings = pg_settings(url)
    base = out["drain"]
    print(f"PostgreSQL {settings['server_version']} fsync={settings['fsync']} "
          f"synchronous_commit={settings['synchronous_commit']}; {items} items, {workers} workers, claim batch {batch}")
    print(f"{'path':<46}{'items/s':>10}{'vs drain':>10}")
    for label, rate in out.items():
        if label.endswith(" ms"):
            print(f"{'queued -> body start, ' + label.removeprefix('start '):<46}{rate:>10.1f}")
        else:
            print(f"{label:<46}{rate:>10.0f}{rate / base:>10.2f}")
    print(f"claim cost per item claimed (claims of {batch}): 1 function {claim_one:.1f} us, "
          f"{functions} functions {claim_many:.1f} us, ratio {claim_many / claim_one:.2f} (target <= 1.5)")



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--functions", type=int, default=200,
                        help="functions of the many-functions drain and claim cost")
    parser.add_argument("--scale", action="store_true", help="also measure with 1,000,000 queued and 100,000 waits")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with database(args.database_url) as url:
        asyncio.run(run(url, args.items, args.workers, args.batch, args.scale, args.functions))


if __name__ == "__main__":
    main()
