"""Procrastinate (psycopg 3 connector) measured the way every peer is: batch and single enqueue, drain,
latency.

Its schema goes into its own database with `schema_manager.apply_schema_async()`. Jobs are deferred with
`Task.batch_defer_async` (batch) and `Task.defer_async` (single); the worker is `App.run_worker_async`
with WORKER_CONCURRENCY async jobs in flight, LISTEN/NOTIFY on (the default), stopped by cancelling its
task, which Procrastinate treats as a graceful stop.

Usage: python bench/peers/procrastinate_bench.py --url postgresql://user@host:port/db [--jobs N] [--samples S]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import procrastinate
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import peers

DATABASE = "bench_peer_procrastinate"
TASK = "noop"
WORKER_CONCURRENCY = 10
# The worker holds a connection for LISTEN and each in-flight job needs one to fetch and to finish, so
# the pool is sized to the concurrency rather than psycopg_pool's default of 4.
POOL_MAX = WORKER_CONCURRENCY + 2
# The worker fetches one job per query, one fetch at a time, whatever the concurrency (measured: 1, 10
# and 30 drain at the same rate), so it runs at a few hundred jobs/s; `measure` drains at most this many
# to stay near a minute. The rate is flat in the backlog size (2,000 and 10,000 drained alike).
DRAIN_JOBS_MAX = 3_000


def _app(db: str, on_job: Callable[[], None] = lambda: None) -> tuple[procrastinate.App, Any]:
    connector = procrastinate.PsycopgConnector(conninfo=db, min_size=1, max_size=POOL_MAX)
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK)
    async def noop() -> None:
        on_job()

    return app, noop


async def _setup(url: str) -> str:
    db = await asyncio.to_thread(peers.recreate_database, url, DATABASE)
    app, _ = _app(db)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    return db


def _count(db: str, status: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = %s", (status,)).fetchone()
    return int(row[0]) if row else 0


async def _defer_batches(task: Any, n: int) -> None:
    for start in range(0, n, peers.ENQUEUE_BATCH):
        await task.batch_defer_async(*({} for _ in range(min(peers.ENQUEUE_BATCH, n - start))))


async def _enqueue_batch(url: str, n: int) -> float:
    db = await _setup(url)
    app, noop = _app(db)
    async with app.open_async():
        clock = peers.Stopwatch()
        await _defer_batches(noop, n)
        seconds = clock.elapsed()
    assert _count(db, "todo") == n
    return seconds


def enqueue_batch(url: str, n: int) -> peers.Measures:
    """`Task.batch_defer_async` with ENQUEUE_BATCH jobs per call."""
    seconds = asyncio.run(_enqueue_batch(url, n))
    return {"enqueue_batch_jobs_per_s": peers.rate(n, seconds), "enqueue_batch_size": peers.ENQUEUE_BATCH}


async def _enqueue_single(url: str, n: int) -> float:
    db = await _setup(url)
    app, noop = _app(db)
    async with app.open_async():
        clock = peers.Stopwatch()
        for _ in range(n):
            await noop.defer_async()
        seconds = clock.elapsed()
    assert _count(db, "todo") == n
    return seconds


def enqueue_single(url: str, n: int) -> peers.Measures:
    """`Task.defer_async()` one job per call."""
    seconds = asyncio.run(_enqueue_single(url, n))
    return {"enqueue_single_jobs_per_s": peers.rate(n, seconds), "enqueue_single_jobs": n}


def _start_worker(app: procrastinate.App) -> asyncio.Task[None]:
    return asyncio.create_task(
        app.run_worker_async(concurrency=WORKER_CONCURRENCY, install_signal_handlers=False),
        name="procrastinate-worker",
    )


async def _stop(task: asyncio.Task[None]) -> None:
    # Cancelling run_worker_async is Procrastinate's documented in-process stop: in-flight jobs finish
    # and their status is written before the task ends.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30.0)


async def _drain(url: str, n: int) -> float:
    db = await _setup(url)
    done = 0
    all_done = asyncio.Event()

    def on_job() -> None:
        nonlocal done
        done += 1
        if done == n:
            all_done.set()

    app, noop = _app(db, on_job)
    async with app.open_async():
        await _defer_batches(noop, n)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("ANALYZE procrastinate_jobs")
        clock = peers.Stopwatch()
        task = _start_worker(app)
        try:
            await asyncio.wait_for(all_done.wait(), peers.DRAIN_TIMEOUT_S)
            seconds = clock.elapsed()
        finally:
            await _stop(task)
    succeeded = _count(db, "succeeded")
    if succeeded != n:
        raise RuntimeError(f"procrastinate drain: {succeeded} of {n} jobs marked succeeded after the stop")
    return seconds


def drain(url: str, n: int) -> peers.Measures:
    """n jobs pre-deferred, then the worker started; timed until every job body has run."""
    seconds = asyncio.run(_drain(url, n))
    return {
        "drain_jobs_per_s": peers.rate(n, seconds),
        "drain_jobs": n,
        "drain_worker": f"concurrency={WORKER_CONCURRENCY}",
    }


async def _latency(url: str, samples: int) -> list[float]:
    db = await _setup(url)
    started: asyncio.Queue[float] = asyncio.Queue()
    app, noop = _app(db, lambda: started.put_nowait(time.perf_counter()))
    results: list[float] = []
    async with app.open_async():
        task = _start_worker(app)
        try:
            await asyncio.sleep(0.5)  # the worker is listening before the first sample
            for _ in range(samples):
                await asyncio.sleep(peers.latency_pause())
                enqueued = time.perf_counter()
                await noop.defer_async()
                results.append(await asyncio.wait_for(started.get(), 10.0) - enqueued)
        finally:
            await _stop(task)
    return results


def latency(url: str, samples: int) -> peers.Measures:
    """Enqueue -> job body start with an idle worker (woken by Procrastinate's NOTIFY)."""
    return peers.latency_summary("latency", asyncio.run(_latency(url, samples)))


def measure(url: str, jobs: int, samples: int) -> peers.Measures:
    result: peers.Measures = {"version": f"procrastinate {procrastinate.__version__}"}
    try:
        result |= enqueue_batch(url, jobs)
        result |= enqueue_single(url, peers.single_jobs(jobs))
        result |= drain(url, min(jobs, DRAIN_JOBS_MAX))
        result |= latency(url, samples)
    finally:
        peers.drop_database(url, DATABASE)
    return result


if __name__ == "__main__":
    # Procrastinate warns when the App lives in __main__ (workers elsewhere could not import its tasks):
    # run the same code from its importable module instead.
    from bench.peers import procrastinate_bench

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    peers.cli("procrastinate", procrastinate_bench.measure)
