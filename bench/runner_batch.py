"""How long the Runner takes to turn one full batch of events (200) into runs.

Each round ingests 200 events (half to a plain function, half to one with an idempotency key and a
cancelOn listener) and times one `Runner.run_once()`, which claims and processes them all in one
transaction. Prints the median and p90 over the rounds.

    python bench/runner_batch.py [--url URL] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from common import database, pct, pg_settings

from pgqueue.apps import registration
from pgqueue.db.notify import Wakeup
from pgqueue.db.pool import open_pool
from pgqueue.events import ingest
from pgqueue.runner.loop import Runner
from pgqueue.store import apps, events

BATCH = 200
FUNCTIONS = [
    {"id": "plain", "triggers": [{"event": "bench/plain"}]},
    {"id": "keyed", "triggers": [{"event": "bench/keyed"}], "idempotency": "event.data.k",
     "cancel": [{"event": "bench/cancel", "if": "event.data.k == async.data.k"}]},
]


async def measure(url: str, rounds: int) -> list[float]:
    pool = await open_pool(url, max_size=4)
    try:
        async with pool.connection() as conn, conn.transaction():
            await apps.sync(conn, registration.parse_register(
                {"appName": "bench", "url": "http://127.0.0.1:9/api/inngest", "functions": FUNCTIONS}))
        runner = Runner(pool, wakeup=Wakeup(), batch_size=BATCH)
        timings: list[float] = []
        for r in range(rounds + 2):  # two warm-up rounds
            body = json.dumps([{"name": "bench/plain" if i % 2 else "bench/keyed", "data": {"k": f"{r}-{i}"}}
                               for i in range(BATCH)]).encode()
            batch = ingest.parse_events(body, seed_header=None, max_event_bytes=1 << 20, max_events=BATCH)
            async with pool.connection() as conn, conn.transaction():
                await events.ingest(conn, batch)
            start = time.perf_counter()
            tick = await runner.run_once()
            elapsed = time.perf_counter() - start
            assert tick.events_seen == BATCH and tick.runs_created == BATCH, tick
            if r >= 2:
                timings.append(elapsed * 1000)
        return timings
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with database(args.url) as url:
        print(pg_settings(url))
        timings = asyncio.run(measure(url, args.rounds))
    print(f"run_once over {BATCH} events, {len(timings)} rounds: median {statistics.median(timings):.1f} ms, "
          f"p90 {pct(timings, 90):.1f} ms, min {min(timings):.1f} ms")


if __name__ == "__main__":
    main()
