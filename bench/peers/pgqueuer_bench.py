"""PgQueuer (asyncpg driver) measured the way every peer is: batch and single enqueue, drain, latency.

Installed with `Queries.install()` into its own database. The worker is `PgQueuer(AsyncpgDriver(conn))`
from the project README, one no-op entrypoint, `run(batch_size=WORKER_BATCH)`; the enqueuer has its own
connection so it never queues behind the worker's driver lock.

Usage: python bench/peers/pgqueuer_bench.py --url postgresql://user@host:port/db [--jobs N] [--samples S]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import asyncpg
import pgqueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import peers

DATABASE = "bench_peer_pgqueuer"
ENTRYPOINT = "noop"
# Jobs fetched per dequeue: the default is 10; 50 matches the raw ceiling's claim batch, the setting a
# user chasing throughput would raise first. Concurrency is otherwise unlimited (PgQueuer's default).
WORKER_BATCH = 50


async def _setup(url: str) -> str:
    db = await asyncio.to_thread(peers.recreate_database, url, DATABASE)
    conn = await asyncpg.connect(db)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return db


async def _queue_depth(db: str) -> int:
    conn = await asyncpg.connect(db)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pgqueuer"))
    finally:
        await conn.close()


async def _enqueue_batches(queries: Queries, n: int) -> None:
    for start in range(0, n, peers.ENQUEUE_BATCH):
        size = min(peers.ENQUEUE_BATCH, n - start)
        await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)


async def _enqueue_batch(url: str, n: int) -> float:
    db = await _setup(url)
    conn = await asyncpg.connect(db)
    try:
        queries = Queries(AsyncpgDriver(conn))
        clock = peers.Stopwatch()
        await _enqueue_batches(queries, n)
        seconds = clock.elapsed()
    finally:
        await conn.close()
    assert await _queue_depth(db) == n
    return seconds


def enqueue_batch(url: str, n: int) -> peers.Measures:
    """`Queries.enqueue` with lists of ENQUEUE_BATCH jobs (one INSERT ... unnest per call)."""
    seconds = asyncio.run(_enqueue_batch(url, n))
    return {"enqueue_batch_jobs_per_s": peers.rate(n, seconds), "enqueue_batch_size": peers.ENQUEUE_BATCH}


async def _enqueue_single(url: str, n: int) -> float:
    db = await _setup(url)
    conn = await asyncpg.connect(db)
    try:
        queries = Queries(AsyncpgDriver(conn))
        clock = peers.Stopwatch()
        for _ in range(n):
            await queries.enqueue(ENTRYPOINT, None)
        seconds = clock.elapsed()
    finally:
        await conn.close()
    assert await _queue_depth(db) == n
    return seconds


def enqueue_single(url: str, n: int) -> peers.Measures:
    """`Queries.enqueue(entrypoint, payload)` one job per call."""
    seconds = asyncio.run(_enqueue_single(url, n))
    return {"enqueue_single_jobs_per_s": peers.rate(n, seconds), "enqueue_single_jobs": n}


async def _worker(db: str, on_job: Callable[[], None]) -> tuple[asyncpg.Connection, pgqueuer.PgQueuer]:
    conn = await asyncpg.connect(db)
    pgq = pgqueuer.PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:  # pyright: ignore[reportUnusedFunction]
        on_job()

    return conn, pgq


async def _stop(conn: asyncpg.Connection, pgq: pgqueuer.PgQueuer, task: asyncio.Task[None]) -> None:
    # PgQueuer's own shutdown: stop dequeuing, let in-flight jobs finish, flush the status log.
    pgq.shutdown.set()
    await asyncio.wait_for(task, 30.0)
    await conn.close()


async def _drain(url: str, n: int) -> float:
    db = await _setup(url)
    seed = await asyncpg.connect(db)
    try:
        await _enqueue_batches(Queries(AsyncpgDriver(seed)), n)
        await seed.execute("ANALYZE pgqueuer")
    finally:
        await seed.close()
    done = 0
    all_done = asyncio.Event()

    def on_job() -> None:
        nonlocal done
        done += 1
        if done == n:
            all_done.set()

    conn, pgq = await _worker(db, on_job)
    clock = peers.Stopwatch()
    task = asyncio.create_task(pgq.run(batch_size=WORKER_BATCH), name="pgqueuer-worker")
    try:
        await asyncio.wait_for(all_done.wait(), peers.DRAIN_TIMEOUT_S)
        seconds = clock.elapsed()
    finally:
        await _stop(conn, pgq, task)
    left = await _queue_depth(db)
    if left:
        raise RuntimeError(f"pgqueuer drain: {left} jobs still queued after every job body ran")
    return seconds


def drain(url: str, n: int) -> peers.Measures:
    """n jobs pre-enqueued, then the worker started; timed until every job body has run."""
    seconds = asyncio.run(_drain(url, n))
    return {
        "drain_jobs_per_s": peers.rate(n, seconds),
        "drain_jobs": n,
        "drain_worker": f"batch_size={WORKER_BATCH}",
    }


async def _latency(url: str, samples: int) -> list[float]:
    db = await _setup(url)
    started: asyncio.Queue[float] = asyncio.Queue()
    conn, pgq = await _worker(db, lambda: started.put_nowait(time.perf_counter()))
    # A long dequeue_timeout: an idle worker waits on NOTIFY, not on its polling fallback.
    task = asyncio.create_task(
        pgq.run(batch_size=WORKER_BATCH, dequeue_timeout=timedelta(seconds=30)), name="pgqueuer-worker"
    )
    producer = await asyncpg.connect(db)
    results: list[float] = []
    try:
        queries = Queries(AsyncpgDriver(producer))
        await asyncio.sleep(0.5)  # the worker is listening before the first sample
        for _ in range(samples):
            await asyncio.sleep(peers.latency_pause())
            enqueued = time.perf_counter()
            await queries.enqueue(ENTRYPOINT, None)
            results.append(await asyncio.wait_for(started.get(), 10.0) - enqueued)
    finally:
        await producer.close()
        await _stop(conn, pgq, task)
    return results


def latency(url: str, samples: int) -> peers.Measures:
    """Enqueue -> job body start with an idle worker (woken by PgQueuer's NOTIFY trigger)."""
    return peers.latency_summary("latency", asyncio.run(_latency(url, samples)))


def measure(url: str, jobs: int, samples: int) -> peers.Measures:
    result: peers.Measures = {
        "version": f"pgqueuer {metadata.version('pgqueuer')} (asyncpg {metadata.version('asyncpg')})"
    }
    try:
        result |= enqueue_batch(url, jobs)
        result |= enqueue_single(url, peers.single_jobs(jobs))
        result |= drain(url, jobs)
        result |= latency(url, samples)
    finally:
        peers.drop_database(url, DATABASE)
    return result


if __name__ == "__main__":
    peers.cli("pgqueuer", measure)
