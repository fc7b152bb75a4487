"""Peer benchmarks: the same measures taken of other PostgreSQL job queues on the same server as pgqueue.

Each peer module (`raw`, `pgqueuer_bench`, `procrastinate_bench`, `dbos_bench`) exposes plain functions
taking a server URL and returning a dict of numbers: `enqueue_batch(url, n)`, `enqueue_single(url, n)`,
`drain(url, n)`, `latency(url, samples)` (DBOS adds `workflow_3step`), and `measure(url, jobs, samples)`
running them all. Each also runs as a script printing one JSON object; `run.run_peer` calls it that way,
so a peer's dependencies stay out of the caller's process. Every peer works in its own database on the
given server (dropped and recreated by each function), never in the database the URL names.

This module holds only what the peers share and imports none of them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

# Peer name (as given to run.run_peer) -> module file under bench/peers/.
PEERS: dict[str, str] = {
    "raw": "raw",
    "pgqueuer": "pgqueuer_bench",
    "procrastinate": "procrastinate_bench",
    "dbos": "dbos_bench",
}

# Shared knobs, the same for every peer so the figures compare.
ENQUEUE_BATCH = 500  # jobs per batch-enqueue call (one transaction each)
LATENCY_PAUSE_S = 0.02  # idle gap between latency samples, so each one finds an idle worker
DRAIN_TIMEOUT_S = 120.0  # a drain that has not finished by then is a failure, not a slow figure

Measures = dict[str, Any]


def database_url(url: str, dbname: str) -> str:
    """`url` with its database replaced by `dbname` (user, host, port and query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def recreate_database(url: str, dbname: str) -> str:
    """Drop (forcing out leftover sessions) and create `dbname` on the server `url` points at; its URL.

    CREATE DATABASE cannot run in a transaction, hence autocommit. The peer's own objects go in there, so
    nothing a peer installs can collide with another peer or with pgqueue's schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return database_url(url, dbname)


def drop_database(url: str, dbname: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def server_settings(url: str) -> Measures:
    """The settings that decide what a commit costs, so a printed figure says what it was measured on."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('server_version', 'fsync', 'synchronous_commit')"
        ).fetchall()
    return {f"pg_{name}": setting for name, setting in rows}


def rate(jobs: int, seconds: float) -> float:
    return round(jobs / seconds, 1) if seconds > 0 else math.inf


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was actually observed (p99 of 100 samples is the 99th)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(prefix: str, samples_s: Sequence[float]) -> Measures:
    ms = [s * 1000.0 for s in samples_s]
    return {
        f"{prefix}_samples": len(ms),
        f"{prefix}_p50_ms": round(percentile(ms, 0.50), 2),
        f"{prefix}_p99_ms": round(percentile(ms, 0.99), 2),
        f"{prefix}_max_ms": round(max(ms), 2),
    }


def latency_pause(spread_s: float = 0.0) -> float:
    """Seconds to idle before a latency sample: LATENCY_PAUSE_S plus up to `spread_s` at random. A peer
    that finds jobs by polling passes its poll interval, so samples do not lock to the poll's phase."""
    return LATENCY_PAUSE_S + random.uniform(0.0, spread_s)


def single_jobs(jobs: int) -> int:
    """How many one-at-a-time enqueues `measure` times: a tenth of the batch count, since each is a commit
    (a few ms with fsync on) and the whole peer should measure in about a minute."""
    return max(100, jobs // 10)


class Stopwatch:
    """perf_counter start plus elapsed seconds; the only clock the measures use."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def cli(peer: str, measure: Callable[[str, int, int], Measures], argv: Sequence[str] | None = None) -> None:
    """`--url URL --jobs N --samples S`: run `measure` and print its dict as one JSON object on stdout."""
    parser = argparse.ArgumentParser(description=f"{peer} peer benchmark; prints one JSON object")
    parser.add_argument("--url", required=True, help="postgresql://user@host:port/db of the server to use")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per throughput measure")
    parser.add_argument("--samples", type=int, default=100, help="enqueue-to-start latency samples")
    args = parser.parse_args(argv)
    result = {"peer": peer, **server_settings(args.url), **measure(args.url, args.jobs, args.samples)}
    print(json.dumps(result), flush=True)
