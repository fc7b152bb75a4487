"""DBOS Transact measured the way every peer is, plus its own unit of work: a durable 3-step workflow.

DBOS keeps its system tables in a database of its own (`system_database_url`), created and migrated at
`DBOS.launch()`. A job is a no-op `@DBOS.workflow` on a database-backed queue. DBOS has no batch
enqueue; its nearest is `DBOSClient.enqueue_in_transaction`, many enqueues in one caller-owned
transaction, which is what `enqueue_batch` times. The worker is the launched DBOS process itself, so
"start the worker" is `DBOS.launch()` with `listen_queues` naming the queue; phases that must not run
the jobs listen to no queue.

Usage: python bench/peers/dbos_bench.py --url postgresql://user@host:port/db [--jobs N] [--samples S]
"""

from __future__ import annotations

import contextlib
import logging
import queue as fifo
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import psycopg
import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import peers

DATABASE = "bench_peer_dbos"
APP = "pgqueue-bench-peer"
WORK_QUEUE = "bench_work"  # drained and used for latency
PARKED_QUEUE = "bench_parked"  # enqueue measures only: nobody listens to it, so nothing runs
# A user who wants a queue to move sets both: the default 1 s poll makes every dequeue wait up to a
# second, and without a worker limit each poll starts every queued workflow on a thread of its own.
# Each poll starts at most WORKER_CONCURRENCY minus those running, so the drain is poll-bound below
# ~100: measured 2,000 jobs at 10 / 50 / 100 / 200 -> 71 / 300 / 408 / 386 per s (0.05 s polls: no gain).
WORKER_CONCURRENCY = 100
POLLING_INTERVAL_S = 0.1
WORKFLOW_CONCURRENCY = 10  # threads each running 3-step workflows back to back in `workflow_3step`
# DBOS runs each enqueue and each workflow as several SQLAlchemy round trips (a few hundred per second
# here), so `measure` takes fewer jobs to stay near a minute; every rate was flat in the count tried.
ENQUEUE_JOBS_MAX = 5_000
DRAIN_JOBS_MAX = 3_000
WORKFLOW_3STEP_MAX = 500


def _nothing() -> None:
    pass


_on_job: Callable[[], None] = _nothing  # what the no-op body does: set per phase


@DBOS.workflow(name="bench_noop")
def noop_workflow() -> None:
    _on_job()


@DBOS.step(name="bench_step_one")
def step_one() -> None:
    pass


@DBOS.step(name="bench_step_two")
def step_two() -> None:
    pass


@DBOS.step(name="bench_step_three")
def step_three() -> None:
    pass


@DBOS.workflow(name="bench_three_steps")
def three_step_workflow() -> None:
    step_one()
    step_two()
    step_three()


def _setup(url: str) -> str:
    db = peers.recreate_database(url, DATABASE)
    with _launched(db, listen=[]):
        DBOS.register_queue(
            WORK_QUEUE, worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=POLLING_INTERVAL_S
        )
        DBOS.register_queue(PARKED_QUEUE, polling_interval_sec=POLLING_INTERVAL_S)
    return db


@contextlib.contextmanager
def _launched(db: str, listen: Sequence[str]) -> Iterator[None]:
    """A launched DBOS process dequeuing only from `listen`; destroyed on exit, waiting for its
    in-flight workflows so their completion is written before the next phase counts rows."""
    config: DBOSConfig = {"name": APP, "system_database_url": db, "log_level": "WARNING"}
    DBOS(config=config)
    try:
        DBOS.listen_queues(listen)
        DBOS.launch()
        yield
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=30)


def _count(db: str, queue_name: str, status: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = %s AND status = %s",
            (queue_name, status),
        ).fetchone()
    return int(row[0]) if row else 0


def _enqueue_in_transactions(db: str, queue_name: str, n: int) -> float:
    """DBOSClient.enqueue_in_transaction, ENQUEUE_BATCH per transaction; seconds taken."""
    client = DBOSClient(system_database_url=db, application_name=APP)
    engine = sa.create_engine(sa.make_url(db).set(drivername="postgresql+psycopg"))
    options: EnqueueOptions = {"workflow_name": "bench_noop", "queue_name": queue_name}
    try:
        clock = peers.Stopwatch()
        for start in range(0, n, peers.ENQUEUE_BATCH):
            with engine.begin() as conn:
                for _ in range(min(peers.ENQUEUE_BATCH, n - start)):
                    client.enqueue_in_transaction(conn, options)
        return clock.elapsed()
    finally:
        engine.dispose()
        client.destroy()


def enqueue_batch(url: str, n: int) -> peers.Measures:
    """`DBOSClient.enqueue_in_transaction`, ENQUEUE_BATCH enqueues per transaction (DBOS has no
    multi-row enqueue; this saves the per-job commit)."""
    db = _setup(url)
    seconds = _enqueue_in_transactions(db, PARKED_QUEUE, n)
    assert _count(db, PARKED_QUEUE, "ENQUEUED") == n
    return {
        "enqueue_batch_jobs_per_s": peers.rate(n, seconds),
        "enqueue_batch_size": peers.ENQUEUE_BATCH,
        "enqueue_batch_api": "DBOSClient.enqueue_in_transaction",
    }


def enqueue_single(url: str, n: int) -> peers.Measures:
    """`Queue.enqueue(workflow)` in a loop from a launched process that does not dequeue that queue."""
    db = _setup(url)
    with _launched(db, listen=[]):
        parked = DBOS.retrieve_queue(PARKED_QUEUE)
        assert parked is not None
        clock = peers.Stopwatch()
        for _ in range(n):
            parked.enqueue(noop_workflow)
        seconds = clock.elapsed()
    assert _count(db, PARKED_QUEUE, "ENQUEUED") == n
    return {"enqueue_single_jobs_per_s": peers.rate(n, seconds), "enqueue_single_jobs": n}


def drain(url: str, n: int) -> peers.Measures:
    """n workflows enqueued while no process listens, then a DBOS process launched listening to the
    queue; timed from launch until every workflow body has run."""
    global _on_job
    db = _setup(url)
    _enqueue_in_transactions(db, WORK_QUEUE, n)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ANALYZE dbos.workflow_status")
    lock = threading.Lock()
    all_done = threading.Event()
    done = 0

    def on_job() -> None:
        nonlocal done
        with lock:  # workflows run on DBOS's executor threads
            done += 1
            if done == n:
                all_done.set()

    _on_job = on_job
    try:
        clock = peers.Stopwatch()
        with _launched(db, listen=[WORK_QUEUE]):
            if not all_done.wait(peers.DRAIN_TIMEOUT_S):
                raise RuntimeError(
                    f"dbos drain: {done} of {n} workflows ran within {peers.DRAIN_TIMEOUT_S} s"
                )
            seconds = clock.elapsed()
    finally:
        _on_job = _nothing
    succeeded = _count(db, WORK_QUEUE, "SUCCESS")
    if succeeded != n:
        raise RuntimeError(f"dbos drain: {succeeded} of {n} workflows recorded SUCCESS after the stop")
    return {
        "drain_jobs_per_s": peers.rate(n, seconds),
        "drain_jobs": n,
        "drain_worker": f"worker_concurrency={WORKER_CONCURRENCY}, polling_interval_sec={POLLING_INTERVAL_S}",
    }


def latency(url: str, samples: int) -> peers.Measures:
    """Enqueue -> workflow body start with an idle process listening to the queue (found by its poll,
    every POLLING_INTERVAL_S; samples are spaced by a random part of a poll so they sample its phase
    evenly); then the same through `DBOS.start_workflow`, which runs the workflow in-process at once."""
    global _on_job
    db = _setup(url)
    started: fifo.SimpleQueue[float] = fifo.SimpleQueue()

    def record() -> None:
        started.put(time.perf_counter())

    _on_job = record
    queued: list[float] = []
    direct: list[float] = []
    try:
        with _launched(db, listen=[WORK_QUEUE]):
            work = DBOS.retrieve_queue(WORK_QUEUE)
            assert work is not None
            time.sleep(0.5)  # the queue's worker thread is polling before the first sample
            for _ in range(samples):
                time.sleep(peers.latency_pause(POLLING_INTERVAL_S))
                enqueued = time.perf_counter()
                work.enqueue(noop_workflow)
                queued.append(started.get(timeout=10.0) - enqueued)
            for _ in range(samples):
                time.sleep(peers.latency_pause())
                enqueued = time.perf_counter()
                handle = DBOS.start_workflow(noop_workflow)
                direct.append(started.get(timeout=10.0) - enqueued)
                handle.get_result()
    finally:
        _on_job = _nothing
    return {
        **peers.latency_summary("latency", queued),
        **peers.latency_summary("latency_start_workflow", direct),
    }


def workflow_3step(url: str, n: int, concurrency: int = WORKFLOW_CONCURRENCY) -> peers.Measures:
    """n durable workflows of three no-op steps, `concurrency` threads each calling the workflow function
    directly (a DBOS workflow runs durably in its caller's thread) until n have completed."""
    db = _setup(url)
    remaining = iter(range(n))
    lock = threading.Lock()

    def run_until_none_left() -> int:
        ran = 0
        while True:
            with lock:
                if next(remaining, None) is None:
                    return ran
            three_step_workflow()
            ran += 1

    with _launched(db, listen=[]):
        clock = peers.Stopwatch()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-3step") as pool:
            ran = sum(pool.map(lambda _: run_until_none_left(), range(concurrency)))
        seconds = clock.elapsed()
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE name = %s AND status = 'SUCCESS'",
            ("bench_three_steps",),
        ).fetchone()
    if ran != n or row is None or row[0] != n:
        raise RuntimeError(f"dbos 3-step: ran {ran}, recorded {row[0] if row else 0} of {n}")
    return {
        "workflow_3step_per_s": peers.rate(n, seconds),
        "workflow_3step_runs": n,
        "workflow_3step_concurrency": concurrency,
    }


def measure(url: str, jobs: int, samples: int) -> peers.Measures:
    result: peers.Measures = {"version": f"dbos {metadata.version('dbos')} (SQLAlchemy {sa.__version__})"}
    try:
        result |= enqueue_batch(url, min(jobs, ENQUEUE_JOBS_MAX))
        result |= enqueue_single(url, peers.single_jobs(jobs))
        result |= drain(url, min(jobs, DRAIN_JOBS_MAX))
        result |= latency(url, samples)
        result |= workflow_3step(url, min(jobs, WORKFLOW_3STEP_MAX))
    finally:
        peers.drop_database(url, DATABASE)
    return result


if __name__ == "__main__":
    logging.getLogger("dbos").setLevel(logging.WARNING)
    peers.cli("dbos", measure)
