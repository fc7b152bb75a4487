"""Every benchmark in one command, on one PostgreSQL, printed as one set of tables with ratios.

    pip install -e '.[test]' -r bench/requirements-peers.txt
    python bench/run.py [--jobs 10000] [--runs 500] [--samples 100] [--no-scale] [--database-url URL]

  * queue: enqueue (batched, single), no-op drain and enqueue -> start latency for pgqueue (its
    production paths, see bench/queue_throughput.py), PgQueuer (asyncpg), Procrastinate, DBOS and
    the raw SKIP LOCKED ceiling (bench/peers/, each in its own process and database);
  * durable workflows: a 3-step no-op function through the official Python SDK over HTTP
    (bench/e2e.py) beside DBOS's in-process 3-step workflow and the SDK app's own ceiling;
  * scale: pgqueue's drain with 1,000,000 items queued and with 100,000 pending waits.
Without a URL it starts pgqueue's embedded PostgreSQL (fsync and synchronous_commit on) and prints
its settings with the results. Ratios are always between figures of this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import e2e, queue_throughput  # noqa: E402
from bench.common import database, pg_settings  # noqa: E402
from bench.peers.run import PeerError, run_peer  # noqa: E402

PEERS = ("raw", "pgqueuer", "procrastinate", "dbos")


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}"


def print_targets(queue: dict[str, Any], durable: dict[str, Any], peers: dict[str, dict[str, Any]]) -> None:
    """Issue 26's speed targets, each met or not (✗ marks a miss; bench/README keeps the profile)."""
    share = durable["latency_p50_ms"] - durable["direct_p50_ms"]
    pgqueuer = peers.get("pgqueuer", {}).get("drain_jobs_per_s")
    drain_ratio = queue["drain"] / pgqueuer if pgqueuer else None
    ceiling_ratio = durable["runs_per_s"] / durable["ceiling_best"] if durable.get("ceiling_best") else None
    rows = [
        ("event → first step p50", f"{durable['latency_p50_ms']:.1f} ms", "< 6 ms", durable["latency_p50_ms"] < 6),
        ("event → first step p99", f"{durable['latency_p99_ms']:.1f} ms", "< 12 ms", durable["latency_p99_ms"] < 12),
        ("pgqueue's share of it, p50", f"{share:.1f} ms", "< 4 ms", share < 4),
        ("no-op drain vs PgQueuer", ratio(queue["drain"], pgqueuer), "≥ 1.00",
         drain_ratio is not None and drain_ratio >= 1.0),
        ("3-step SDK runs vs the app's ceiling", ratio(durable["runs_per_s"], durable.get("ceiling_best")), "≥ 0.80",
         ceiling_ratio is not None and ceiling_ratio >= 0.8),
    ]
    print("Speed targets")
    for label, measured, target, met in rows:
        print(f"  {'✓' if met else '✗'} {label:<40}{measured:>10}  target {target}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs per queue measure")
    parser.add_argument("--runs", type=int, default=500, help="3-step runs through the SDK")
    parser.add_argument("--samples", type=int, default=100, help="latency samples")
    parser.add_argument("--workers", type=int, default=2, help="pgqueue workers in the drain process")
    parser.add_argument("--no-scale", action="store_true", help="skip the 1,000,000-queued and 100,000-wait runs")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()

    started = time.monotonic()
    with database(args.database_url) as url:
        settings = pg_settings(url)
        peers: dict[str, dict[str, Any]] = {}
        for name in [p for p in args.peers.split(",") if p]:
            print(f"… {name}", file=sys.stderr, flush=True)
            try:
                peers[name] = run_peer(name, url, args.jobs, args.samples, timeout=600)
            except PeerError as exc:
                print(f"peer {name} failed: {exc}", file=sys.stderr)
        print("… pgqueue queue", file=sys.stderr, flush=True)
        queue = asyncio.run(queue_throughput.measure(url, args.jobs, args.workers, 100, scale=not args.no_scale,
                                                     samples=args.samples))
        print("… pgqueue end to end", file=sys.stderr, flush=True)
        durable = e2e.measure(url, args.runs, args.samples)

    print(f"PostgreSQL {settings['server_version']}: fsync={settings['fsync']} "
          f"synchronous_commit={settings['synchronous_commit']} shared_buffers={settings['shared_buffers']}×8kB; "
          f"{os.cpu_count()} cores; {args.jobs:,} jobs per queue measure; {time.monotonic() - started:.0f} s in all")
    print()
    print("Queue (no-op jobs)")
    head = f"{'system':<34}{'batch enq/s':>13}{'single enq/s':>14}{'drain/s':>10}{'start p50 ms':>14}{'p99 ms':>9}"
    print(head)
    print("-" * len(head))
    rows: list[tuple[str, Any, Any, Any, Any, Any]] = []
    raw = peers.get("raw", {})
    if raw:
        rows.append(("raw SKIP LOCKED, 10 conns, B=50", raw.get("enqueue_batch_jobs_per_s"),
                     raw.get("enqueue_single_jobs_per_s"), raw.get("drain_jobs_per_s"),
                     raw.get("latency_p50_ms"), raw.get("latency_p99_ms")))
        rows.append(("raw, B=1 (one commit per job)", None, None, raw.get("drain_b1_jobs_per_s"), None, None))
    for name in ("pgqueuer", "procrastinate", "dbos"):
        p = peers.get(name)
        if p:
            rows.append((p.get("version", name).split(" (")[0], p.get("enqueue_batch_jobs_per_s"),
                         p.get("enqueue_single_jobs_per_s"), p.get("drain_jobs_per_s"), p.get("latency_p50_ms"),
                         p.get("latency_p99_ms")))
    rows.append(("pgqueue", queue["enqueue batch"], queue["enqueue single"], queue["drain"],
                 queue["start p50 ms"], queue["start p99 ms"]))
    rows.append(("pgqueue, event → first step¹", None, None, None, durable["latency_p50_ms"],
                 durable["latency_p99_ms"]))
    for label, batch, single, drain, p50, p99 in rows:
        print(f"{label:<34}{fmt(batch):>13}{fmt(single):>14}{fmt(drain):>10}{fmt(p50, 1):>14}{fmt(p99, 1):>9}")
    fastest = max((p.get("drain_jobs_per_s") or 0 for n, p in peers.items() if n != "raw"), default=0)
    print(f"pgqueue drain vs the fastest peer: {ratio(queue['drain'], fastest)} (target ≥ 1.50); "
          f"vs the raw batched ceiling: {ratio(queue['drain'], raw.get('drain_jobs_per_s'))} (target ≥ 0.50)")
    print("¹ an event accepted by POST /e until the official SDK app's first step runs: the Event API, the "
          "runner, the queue and the signed HTTP call (targets p50 < 6 ms, p99 < 12 ms).")
    print(f"  the same first call sent straight to the app: p50 {durable['direct_p50_ms']:.1f} ms; pgqueue's share "
          f"p50 {durable['latency_p50_ms'] - durable['direct_p50_ms']:.1f} ms (target < 4 ms)")
    print()
    print("Flow control (pgqueue drain)")
    for label in ("drain, concurrency limit 1 over 1,000 keys", "drain, throttle on every start"):
        print(f"  {label:<46}{fmt(queue[label]):>10}/s  {ratio(queue[label], queue['drain'])} of unlimited")
    print()
    print("Many functions (pgqueue)")
    many = next(k for k in queue if k.startswith("drain, runs of "))
    one_us = queue["claim us/item, 1 function"]
    many_us = queue[many.replace("drain, runs of", "claim us/item,")]
    print(f"  {many:<46}{fmt(queue[many]):>10}/s  {ratio(queue[many], queue['drain'])} of one function")
    print(f"  claim cost per item: one function {one_us:.1f} us, {many.removeprefix('drain, runs of ')} "
          f"{many_us:.1f} us: {ratio(many_us, one_us)} (target ≤ 1.50)")
    print()
    print("Durable 3-step workflows")
    dbos = peers.get("dbos", {}).get("workflow_3step_per_s")
    print(f"  {'SDK app ceiling, 4 in flight (no pgqueue)':<46}{fmt(durable['ceiling_4'], 1):>10}/s")
    print(f"  {'SDK app ceiling, 20 in flight (no pgqueue)':<46}{fmt(durable['ceiling_20'], 1):>10}/s")
    print(f"  {'DBOS in process':<46}{fmt(dbos, 1):>10}/s")
    print(f"  {'SDK app ceiling, best in flight (no pgqueue)':<46}{fmt(durable['ceiling_best'], 1):>10}/s")
    print(f"  {'pgqueue, official Python SDK over HTTP':<46}{fmt(durable['runs_per_s'], 1):>10}/s")
    print(f"  {'  the same, PGQUEUE_ADAPTIVE_CONCURRENCY=1':<46}{fmt(durable['runs_per_s_adaptive'], 1):>10}/s")
    print(f"  pgqueue vs the app's best ceiling: {ratio(durable['runs_per_s'], durable['ceiling_best'])} "
          f"(target ≥ 0.80); adaptive: {ratio(durable['runs_per_s_adaptive'], durable['ceiling_best'])}")
    print(f"  pgqueue vs DBOS: {ratio(durable['runs_per_s'], dbos)} (target ≥ 1.00); vs the app's ceiling at 20 in "
          f"flight: {ratio(durable['runs_per_s'], durable['ceiling_20'])}")
    print()
    print("Ordering: 30 runs of three 0.3 s steps, concurrency 2, sent at once (sent -> ended)")
    print(f"  {'':<22}{'p50 ms':>10}{'p99 ms':>10}{'4th run ms':>12}{'last ms':>10}")
    print(f"  {'pgqueue':<22}{fmt(durable['order_p50_ms']):>10}{fmt(durable['order_p99_ms']):>10}"
          f"{fmt(durable['order_first4_max_ms']):>12}{fmt(durable['order_last_ms']):>10}")
    print(f"  {'ideal: ceil(k/2)×0.9 s':<22}{fmt(durable['order_ideal_p50_ms']):>10}"
          f"{fmt(durable['order_ideal_p99_ms']):>10}{fmt(1800):>12}{fmt(durable['order_ideal_last_ms']):>10}")
    print()
    print_targets(queue, durable, peers)
    if not args.no_scale:
        print()
        print("Scale (pgqueue drain)")
        for label in ("drain, 1,000,000 queued", "drain, 100,000 pending waits"):
            print(f"  {label:<46}{fmt(queue[label]):>10}/s  {ratio(queue[label], queue['drain'])} of the "
                  f"empty-queue drain (target ≥ 0.80)")


if __name__ == "__main__":
    main()
