"""Does the hot path age? Blocks the claim reads per call (pgqueue.claim_v6, the call's run context
included) on a fresh database, then again after `--history` runs of history and as many queue
items claimed and completed (the churn between autovacuums), with the same queue in front of it.

Blocks are the claim transaction's shared buffer hits and reads (EXPLAIN (ANALYZE, BUFFERS) of the
claim, which counts every statement it runs), averaged over `--claims` claims of 10 items each.
With `--baseline-ref`, the same measurement of another revision runs first, in the same run.

Usage: python bench/aging.py [--history 1000000] [--claims 200] [--baseline-ref df76b1a]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.history import revision  # noqa: E402
from pgqueue.db import embedded  # noqa: E402

_SETUP = """
INSERT INTO pgqueue.apps (name, url) VALUES ('aging', 'http://127.0.0.1:9');
INSERT INTO pgqueue.functions (app_id, slug, name, url, config)
SELECT id, 'aging-f', 'f', 'http://127.0.0.1:9', '{}' FROM pgqueue.apps WHERE name = 'aging';
"""
# A batch of runs with their events and first calls, made by the function the runner calls.
_RUNS = """
SELECT pgqueue.event_ingest_v1(coalesce(jsonb_agg(jsonb_build_object('id', e, 'name', 'aging/go',
                                                                     'data', '{"k": 1}'::jsonb, 'ts', 0)), '[]'))
FROM unnest(%(events)s::text[]) AS e;
"""
_CREATE = "SELECT pgqueue.run_create_v2(%(runs)s::jsonb)"
_CLAIM = ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgqueue.claim_v6('aging', 10, 60000, 1000000,"
          " NULL, NULL)")
_CLAIMED = "SELECT id, run_id, lease_token FROM pgqueue.claim_v6('aging', %(n)s, 60000, 1000000, NULL, NULL)"
_DONE = "SELECT * FROM pgqueue.complete_v1(%(batch)s::jsonb, 1000, 100000000)"


def _ulids(n: int) -> list[str]:
    from pgqueue import ids
    return [ids.new_ulid() for _ in range(n)]


def _make_runs(conn: psycopg.Connection[Any], fn: str, n: int) -> None:
    for first in range(0, n, 1000):
        events = _ulids(min(1000, n - first))
        conn.execute(_RUNS, {"events": events})
        conn.execute("DELETE FROM pgqueue.event_inbox")  # the runner's work, done here
        runs = [{"id": r, "function_id": fn, "event_id": e, "event_ids": [e], "max_attempts": 1}
                for r, e in zip(_ulids(len(events)), events, strict=True)]
        conn.execute(_CREATE, {"runs": json.dumps(runs)})


def _churn(conn: psycopg.Connection[Any], n: int) -> None:
    """n runs through the queue: claimed and completed with their value (the group commit)."""
    done = 0
    while done < n:
        leased = conn.execute(_CLAIMED, {"n": 500}).fetchall()
        if not leased:
            return
        batch = [{"item_id": i, "lease_token": str(t), "run_id": r, "item_step_id": "step", "attempt": 0,
                  "started_at": "2026-01-01T00:00:00Z", "request_version": 1, "kind": "done", "output": 1,
                  "status_code": 200, "event_id": _ulids(1)[0], "event_ts": 0} for i, r, t in leased]
        conn.execute(_DONE, {"batch": json.dumps(batch)})
        done += len(leased)


def _claim_blocks(conn: psycopg.Connection[Any], claims: int) -> float:
    total = 0
    for _ in range(claims):
        with conn.transaction(force_rollback=True):  # the queue in front stays the same
            plan = conn.execute(_CLAIM).fetchone()[0][0]  # type: ignore[index]
            total += plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    return total / claims


def measure(code: Path, history: int, claims: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-aging-"))
    pg = embedded.start(tmp / "pgdata")
    env = {**os.environ, "PYTHONPATH": str(code), "DATABASE_URL": pg.url}
    try:
        subprocess.run([sys.executable, "-m", "pgqueue", "migrate"], cwd=code, env=env, check=True,
                       capture_output=True)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(_SETUP)
            fn = str(conn.execute("SELECT id FROM pgqueue.functions WHERE slug = 'aging-f'").fetchone()[0])  # type: ignore[index]
            _make_runs(conn, fn, 1000)  # the queue the claims read
            conn.execute("VACUUM ANALYZE")
            fresh = _claim_blocks(conn, claims)
            # history and churn behind the same queue: runs made, claimed and completed
            for first in range(0, history, 20_000):
                batch = min(20_000, history - first)
                _make_runs(conn, fn, batch)
                _churn(conn, batch)
            aged = _claim_blocks(conn, claims)
            waited = _await_queue_autovacuum(conn)
            settled = _claim_blocks(conn, claims)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"fresh": fresh, "aged": aged, "settled": settled, "waited_s": waited}


def _await_queue_autovacuum(conn: psycopg.Connection[Any], timeout_s: float = 600) -> float:
    """Seconds until autovacuum has taken queue_items' dead rows (below its threshold of 2,000): the
    churn runs faster than any naptime, so `aged` also counts the dead rows of a pass not made yet."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        dead, vacuumed = conn.execute(
            "SELECT n_dead_tup, last_autovacuum IS NOT NULL FROM pg_stat_user_tables"
            " WHERE relid = 'pgqueue.queue_items'::regclass").fetchone()  # type: ignore[misc]
        if vacuumed and dead < 2000:
            break
        time.sleep(5)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--baseline-ref", help="a git revision measured the same way, in the same run")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    if args.baseline_ref:
        with revision(args.baseline_ref) as code:
            results[args.baseline_ref] = measure(code, args.history, args.claims)
    results["this tree"] = measure(ROOT, args.history, args.claims)
    print(f"claim_v6 of 10 items, blocks read per call (hit + read), {args.claims} claims, 1,000 runs queued; "
          f"then after {args.history:,} runs of history and queue churn")
    print("aged: right after the churn (with the dead rows autovacuum has not reached yet); settled: once "
          "autovacuum has passed over queue_items")
    print(f"{'':22}{'fresh':>10}{'aged':>10}{'aged/fresh':>12}{'settled':>10}{'settled/fresh':>15}"
          f"{'waited s':>10}")
    for name, r in results.items():
        print(f"{name:22}{r['fresh']:10.1f}{r['aged']:10.1f}{r['aged'] / r['fresh']:12.2f}"
              f"{r['settled']:10.1f}{r['settled'] / r['fresh']:15.2f}{r['waited_s']:10.0f}")


if __name__ == "__main__":
    main()
