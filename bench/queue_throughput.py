"""Queue benchmark: claim-to-complete throughput of no-op items through the production path
(pgqueue.claim_v1 with leases, then a lease-token-guarded completion per item), side by side:

  * no limits;
  * a concurrency limit of 1 over 1,000 keys (10,000 items);
  * a throttle (GCRA on every item's start, generous enough not to be the bottleneck);
  * the raw `SELECT ... FOR UPDATE SKIP LOCKED` + DELETE ceiling on a bare table, same database.

Usage: python bench/queue_throughput.py [--items 10000] [--workers 8] [--batch 50] [--database-url URL]
Without a URL it starts pgqueue's embedded PostgreSQL (fsync on). Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgqueue.db import embedded, migrate  # noqa: E402
from pgqueue.db.pool import open_pool  # noqa: E402
from pgqueue.store import queue  # noqa: E402


def seed(url: str, items: int, *, keys: int = 0, throttle: bool = False) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgqueue.queue_items, pgqueue.runs, pgqueue.gcra_state CASCADE")
        app = conn.execute("INSERT INTO pgqueue.apps (name, url) VALUES ('bench', 'http://127.0.0.1:9') "
                           "ON CONFLICT (name) DO UPDATE SET url = excluded.url RETURNING id").fetchone()
        fn = conn.execute("INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES "
                          "(%s, %s, 'bench', 'http://127.0.0.1:9', '{}') RETURNING id",
                          (app[0], f"bench-{uuid.uuid4().hex[:8]}")).fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES ('bench-ev', 'b/x', '{}', 0) "
                     "ON CONFLICT DO NOTHING")
        for start in range(0, items, 2000):
            runs = []
            for i in range(start, min(items, start + 2000)):
                run = {"id": f"r{i:07d}", "function_id": str(fn), "event_id": "bench-ev", "event_ids": ["bench-ev"],
                       "max_attempts": 1}
                if keys:
                    run.update(ckeys=[f"fn:bench:{i % keys}"], climits=[1])
                if throttle:
                    run.update(throttle_key="throttle:bench:", throttle={"limit": 1_000_000, "period_ms": 1000,
                                                                          "burst": 1_000_000})
                runs.append(run)
            conn.execute("SELECT pgqueue.run_create_v1(%s::jsonb)", (json.dumps(runs),))
        conn.execute("VACUUM ANALYZE pgqueue.queue_items")


async def drain(pool: AsyncConnectionPool, items: int, workers: int, batch: int) -> float:
    done = 0
    start = time.perf_counter()

    async def worker(n: int) -> None:
        nonlocal done
        idle = 0
        while done < items and idle < 200:
            async with pool.connection() as conn:
                claimed = await queue.claim(conn, f"bench-{n}", batch, 60_000, fn_default_limit=100_000)
            if not claimed:
                idle += 1
                await asyncio.sleep(0.001)
                continue
            idle = 0
            for item in claimed:
                # The production completion: fenced by the lease token, one transaction per item.
                async with pool.connection() as conn, conn.transaction():
                    if await queue.lock_if_leased(conn, item):
                        await queue.delete(conn, item.id)
                done += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))
    if done < items:
        raise RuntimeError(f"only {done} of {items} items drained")
    return items / (time.perf_counter() - start)


async def raw_ceiling(url: str, items: int, workers: int, batch: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("CREATE TABLE bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "run_at timestamptz NOT NULL DEFAULT now(), payload jsonb)")
        conn.execute("INSERT INTO bench_raw (payload) SELECT '{}'::jsonb FROM generate_series(1, %s)", (items,))
        conn.execute("VACUUM ANALYZE bench_raw")
    done = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while True:
                cur = await conn.execute(
                    "WITH c AS (SELECT id FROM bench_raw WHERE run_at <= now() ORDER BY run_at, id LIMIT %s "
                    "FOR UPDATE SKIP LOCKED) DELETE FROM bench_raw b USING c WHERE b.id = c.id RETURNING b.id",
                    (batch,))
                n = len(await cur.fetchall())
                if n == 0:
                    return
                done += n

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.perf_counter() - start)


async def run(url: str, items: int, workers: int, batch: int) -> None:
    pool = await open_pool(url, max_size=workers + 2)
    results: list[tuple[str, float]] = []
    try:
        for label, kwargs in (
            ("no limits", {}),
            ("concurrency limit 1 over 1,000 keys", {"keys": 1000}),
            ("throttle on every start", {"throttle": True}),
        ):
            seed(url, items, **kwargs)  # type: ignore[arg-type]
            results.append((label, await drain(pool, items, workers, batch)))
    finally:
        await pool.close()
    ceiling = await raw_ceiling(url, items, workers, batch)
    with psycopg.connect(url) as conn:
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                     "('fsync', 'synchronous_commit', 'server_version')").fetchall())
    base = results[0][1]
    print(f"PostgreSQL {settings['server_version']} fsync={settings['fsync']} "
          f"synchronous_commit={settings['synchronous_commit']}; {items} items, {workers} workers, claim batch {batch}")
    print(f"{'path':<42}{'items/s':>10}{'vs no limits':>14}{'vs raw':>9}")
    for label, rate in results:
        print(f"{label:<42}{rate:>10.0f}{rate / base:>14.2f}{rate / ceiling:>9.2f}")
    print(f"{'raw SKIP LOCKED ceiling (batched delete)':<42}{ceiling:>10.0f}{ceiling / base:>14.2f}{1:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-bench-q-"))
    pg = None
    url = args.database_url
    try:
        if not url:
            pg = embedded.start(tmp / "pgdata")
            url = pg.url
        migrate.migrate(url)
        asyncio.run(run(url, args.items, args.workers, args.batch))
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
