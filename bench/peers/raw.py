"""The raw ceiling: a bare jobs table worked with `SELECT ... FOR UPDATE SKIP LOCKED` and nothing else.

No leases, retries, logs or status rows: claiming a job deletes it (claim and ack in one statement), so
these figures bound what any queue on the same PostgreSQL can do. An AFTER INSERT statement trigger sends
a NOTIFY, as the queue peers do, so enqueue figures carry the same wake-up cost.

Usage: python bench/peers/raw.py --url postgresql://user@host:port/db [--jobs 10000] [--samples 100]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import peers

DATABASE = "bench_peer_raw"
CHANNEL = "bench_peer_raw_jobs"
WORKERS = 10  # connections draining at once
CLAIM_BATCH = 50

SCHEMA = f"""
CREATE TABLE jobs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  payload jsonb NOT NULL,
  run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_run_at ON jobs (run_at, id);
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', '');
  RETURN NULL;
END $$;
-- One NOTIFY per statement, not per row: a batch insert wakes workers once.
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();
"""

# Claim and ack in one statement: the CTE picks rows under SKIP LOCKED, the DELETE consumes them.
CLAIM = (
    "WITH c AS (SELECT id FROM jobs WHERE run_at <= now() ORDER BY run_at, id LIMIT %s "
    "FOR UPDATE SKIP LOCKED) DELETE FROM jobs j USING c WHERE j.id = c.id RETURNING j.id, j.payload"
)
INSERT_MANY = "INSERT INTO jobs (payload) SELECT p::jsonb FROM unnest(%s::text[]) AS p"
INSERT_ONE = "INSERT INTO jobs (payload) VALUES (%s::jsonb)"
PAYLOAD = json.dumps({"noop": True})


def _setup(url: str) -> str:
    db = peers.recreate_database(url, DATABASE)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(SCHEMA)  # type: ignore[arg-type]
    return db


def _count(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    return int(row[0]) if row else 0


def _seed(db: str, n: int) -> None:
    with psycopg.connect(db) as conn:
        for start in range(0, n, peers.ENQUEUE_BATCH):
            conn.execute(INSERT_MANY, ([PAYLOAD] * min(peers.ENQUEUE_BATCH, n - start),))
            conn.commit()
        conn.execute("ANALYZE jobs")
        conn.commit()


def enqueue_batch(url: str, n: int) -> peers.Measures:
    """Multi-row INSERT (unnest of an array parameter), one transaction per batch of ENQUEUE_BATCH."""
    db = _setup(url)
    with psycopg.connect(db) as conn:
        clock = peers.Stopwatch()
        for start in range(0, n, peers.ENQUEUE_BATCH):
            conn.execute(INSERT_MANY, ([PAYLOAD] * min(peers.ENQUEUE_BATCH, n - start),))
            conn.commit()
        seconds = clock.elapsed()
    assert _count(db) == n
    return {"enqueue_batch_jobs_per_s": peers.rate(n, seconds), "enqueue_batch_size": peers.ENQUEUE_BATCH}


def enqueue_copy(url: str, n: int) -> peers.Measures:
    """COPY FROM STDIN, one transaction per batch of ENQUEUE_BATCH (statement triggers fire for COPY)."""
    db = _setup(url)
    with psycopg.connect(db) as conn:
        clock = peers.Stopwatch()
        for start in range(0, n, peers.ENQUEUE_BATCH):
            with conn.cursor().copy("COPY jobs (payload) FROM STDIN") as copy:
                for _ in range(min(peers.ENQUEUE_BATCH, n - start)):
                    copy.write_row((PAYLOAD,))
            conn.commit()
        seconds = clock.elapsed()
    assert _count(db) == n
    return {"enqueue_copy_jobs_per_s": peers.rate(n, seconds)}


def enqueue_single(url: str, n: int) -> peers.Measures:
    """One INSERT per transaction (autocommit), so each job pays its own commit."""
    db = _setup(url)
    with psycopg.connect(db, autocommit=True) as conn:
        clock = peers.Stopwatch()
        for _ in range(n):
            conn.execute(INSERT_ONE, (PAYLOAD,))
        seconds = clock.elapsed()
    assert _count(db) == n
    return {"enqueue_single_jobs_per_s": peers.rate(n, seconds), "enqueue_single_jobs": n}


async def _drain(db: str, n: int, batch: int) -> float:
    done = 0

    async def worker() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            while True:
                cur = await conn.execute(CLAIM, (batch,))
                claimed = len(await cur.fetchall())
                if claimed == 0:
                    return
                done += claimed

    clock = peers.Stopwatch()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), peers.DRAIN_TIMEOUT_S)
    seconds = clock.elapsed()
    if done != n:
        raise RuntimeError(f"raw drain consumed {done} of {n} jobs")
    return seconds


def drain(url: str, n: int, batch: int = CLAIM_BATCH) -> peers.Measures:
    """n jobs pre-enqueued, then WORKERS connections claim+delete `batch` at a time until the table is
    empty; batch=1 is one commit per job."""
    db = _setup(url)
    _seed(db, n)
    seconds = asyncio.run(_drain(db, n, batch))
    assert _count(db) == 0
    suffix = "" if batch == CLAIM_BATCH else f"_b{batch}"
    return {
        f"drain{suffix}_jobs_per_s": peers.rate(n, seconds),
        f"drain{suffix}_jobs": n,
        f"drain{suffix}_batch": batch,
        f"drain{suffix}_workers": WORKERS,
    }


async def _latency(db: str, samples: int) -> list[float]:
    wake = asyncio.Event()
    started: asyncio.Queue[float] = asyncio.Queue()

    async def listen() -> None:
        # NOTIFY only wakes the worker; the claim finds the job. Its own connection, always in notifies().
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            wake.set()  # listening: the first claim may start
            async for _ in conn.notifies():
                wake.set()

    async def worker() -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            while True:
                # Clear before claiming: a NOTIFY landing mid-claim sets it again, so no job is missed.
                wake.clear()
                cur = await conn.execute(CLAIM, (1,))
                if await cur.fetchone() is not None:
                    started.put_nowait(time.perf_counter())  # the job body's first line
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)  # poll fallback, as the peers have

    tasks = [asyncio.create_task(listen(), name="raw-listen")]
    await wake.wait()
    tasks.append(asyncio.create_task(worker(), name="raw-worker"))
    results: list[float] = []
    try:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            for _ in range(samples):
                await asyncio.sleep(peers.latency_pause())
                enqueued = time.perf_counter()
                await conn.execute(INSERT_ONE, (PAYLOAD,))
                results.append(await asyncio.wait_for(started.get(), 10.0) - enqueued)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def latency(url: str, samples: int) -> peers.Measures:
    """Enqueue -> job start with an idle worker woken by LISTEN/NOTIFY, one job at a time."""
    db = _setup(url)
    return peers.latency_summary("latency", asyncio.run(_latency(db, samples)))


def measure(url: str, jobs: int, samples: int) -> peers.Measures:
    result: peers.Measures = {"version": f"PostgreSQL (psycopg {psycopg.__version__})"}
    try:
        result |= enqueue_batch(url, jobs)
        result |= enqueue_copy(url, jobs)
        result |= enqueue_single(url, peers.single_jobs(jobs))
        result |= drain(url, jobs)
        result |= drain(url, jobs, batch=1)
        result |= latency(url, samples)
    finally:
        peers.drop_database(url, DATABASE)
    return result


if __name__ == "__main__":
    peers.cli("raw", measure)
