"""Retention's cost: rows removed per second and WAL written per million rows, by this tree (whole
time partitions dropped) beside another revision (`--baseline-ref`, e.g. the batched DELETE of the
release before partitioning) measured the same way in the same run.

For each revision, on its own fresh embedded PostgreSQL 15 (fsync on): migrate, make `--runs` runs
of 20 days ago (each with its event, 3 steps and, where the revision keeps them, 4 attempts) plus
`--runs` lone events of then, and a few live runs among them, then run that revision's own
retention service (`Retention.run_once()`, 7-day window) until it has nothing left to do. Printed:
the seconds it took, rows removed per second (runs + steps + attempts + events), WAL per million
rows removed, and the space the tables take before and after.

Usage: python bench/retention.py [--runs 200000] [--baseline-ref df76b1a]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.history import revision  # noqa: E402
from pgqueue.db import embedded  # noqa: E402

# Old rows, made where either schema takes them (the partitioned one backfills their day first).
_SEED = """
DO $$
BEGIN
    IF to_regproc('pgqueue.history_backfill_v1') IS NOT NULL THEN
        PERFORM pgqueue.history_backfill_v1(date_trunc('day', now() - interval '21 days'), interval '1 day');
    END IF;
END
$$;
INSERT INTO pgqueue.apps (name, url) VALUES ('bench', 'http://127.0.0.1:9') ON CONFLICT DO NOTHING;
INSERT INTO pgqueue.functions (app_id, slug, name, url, config)
SELECT id, 'bench-f', 'f', 'http://127.0.0.1:9', '{}' FROM pgqueue.apps WHERE name = 'bench'
ON CONFLICT DO NOTHING;
"""
_ROWS = """
WITH t AS (SELECT now() - interval '20 days' AS at),
ids AS (
    SELECT n, left(pgqueue.ulid_encode_v1((extract(epoch FROM t.at) * 1000)::bigint, 0), 10) || 'E'
              || lpad(n::text, 15, '0') AS event_id,
           left(pgqueue.ulid_encode_v1((extract(epoch FROM t.at) * 1000)::bigint, 0), 10) || 'R'
              || lpad(n::text, 15, '0') AS run_id, t.at
    FROM t, generate_series(%(first)s, %(last)s) AS n
), ev AS (
    INSERT INTO pgqueue.events (id, name, data, ts, received_at)
    SELECT event_id, 'bench/go', '{"k": 1}'::jsonb, 0, at FROM ids
    UNION ALL
    SELECT left(event_id, 10) || 'L' || right(event_id, 15), 'bench/lone', '{"k": 2}'::jsonb, 0, at FROM ids
), r AS (
    INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, created_at, started_at,
                              ended_at, output)
    SELECT run_id, (SELECT id FROM pgqueue.functions WHERE slug = 'bench-f'), event_id, ARRAY[event_id],
           CASE WHEN n %% 10000 = 0 THEN 'running' ELSE 'completed' END::pgqueue.run_status, 1, at, at,
           CASE WHEN n %% 10000 = 0 THEN NULL ELSE at + interval '1 second' END,
           CASE WHEN n %% 10000 = 0 THEN NULL ELSE '6'::jsonb END
    FROM ids
), s AS (
    INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
    SELECT run_id, 'step-' || k, 'step', 'StepRun', '{"data": 1}', 0 FROM ids, generate_series(1, 3) AS k
)
INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, status_code, started_at)
SELECT run_id, n, 'step', 0, 'ok', 206, at FROM ids, generate_series(1, %(attempts)s) AS k
"""
_COUNTS = """
SELECT (SELECT count(*) FROM pgqueue.runs) AS runs, (SELECT count(*) FROM pgqueue.steps) AS steps,
       (SELECT count(*) FROM pgqueue.attempts) AS attempts, (SELECT count(*) FROM pgqueue.events) AS events,
       (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
        WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'r')::bigint AS bytes,
       pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS wal
"""
# Run in the revision's own interpreter path: its own retention service, until it is done.
_RUN = """
import asyncio, json, sys, time
from datetime import UTC, datetime
from pgqueue.db.pool import open_pool
try:
    from pgqueue.services.retention import Retention
except ImportError:
    from pgqueue.store.retention import Retention

async def main():
    pool = await open_pool(sys.argv[1], max_size=4)
    kwargs = {"pause_s": 0} if "pause_s" in Retention.__init__.__code__.co_varnames else {}
    service = Retention(pool, retention_days=7, **kwargs)
    start = time.perf_counter()
    rounds = 0
    while True:
        tick = await service.run_once()
        rounds += 1
        if tick.done and rounds > 1:
            break
    print(json.dumps({"seconds": time.perf_counter() - start, "rounds": rounds}))
    await pool.close()

asyncio.run(main())
"""


def measure(code: Path, runs: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-retention-"))
    pg = embedded.start(tmp / "pgdata")
    env = {**os.environ, "PYTHONPATH": str(code), "DATABASE_URL": pg.url}
    try:
        subprocess.run([sys.executable, "-m", "pgqueue", "migrate"], cwd=code, env=env, check=True,
                       capture_output=True)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(_SEED)
            partitioned = conn.execute("SELECT to_regclass('pgqueue.live_runs') IS NOT NULL").fetchone()[0]
            for first in range(1, runs + 1, 50_000):
                conn.execute(_ROWS, {"first": first, "last": min(runs, first + 49_999),
                                     "attempts": 0 if partitioned else 4})
            conn.execute("CHECKPOINT")
            conn.execute("VACUUM ANALYZE")
            before = conn.execute(_COUNTS).fetchone()
        done = subprocess.run([sys.executable, "-c", _RUN, pg.url], cwd=code, env=env, check=True,
                              capture_output=True, text=True)
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        with psycopg.connect(pg.url, autocommit=True) as conn:
            after = conn.execute(_COUNTS).fetchone()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert before is not None and after is not None
    removed = sum(int(b) - int(a) for b, a in zip(before[:4], after[:4], strict=True))
    return {"seconds": timing["seconds"], "removed": removed, "kept_runs": int(after[0]),
            "wal": int(after[5]) - int(before[5]), "bytes_before": int(before[4]), "bytes_after": int(after[4])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--baseline-ref", help="a git revision measured the same way, in the same run")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    if args.baseline_ref:
        with revision(args.baseline_ref) as code:
            results[args.baseline_ref] = measure(code, args.runs)
    results["this tree"] = measure(ROOT, args.runs)
    print(f"{args.runs:,} runs of 20 days ago (3 steps each) and {2 * args.runs:,} events, 7-day retention; "
          "each revision's own Retention.run_once() until done")
    names = list(results)
    print(f"{'':32}" + "".join(f"{n:>18}" for n in names))
    rows = [
        ("seconds", lambda r: f"{r['seconds']:.1f}"),
        ("rows removed", lambda r: f"{r['removed']:,}"),
        ("rows removed per second", lambda r: f"{r['removed'] / r['seconds']:,.0f}"),
        ("WAL per million rows (MB)", lambda r: f"{r['wal'] / r['removed'] * 1e6 / 1e6:.1f}"),
        ("live runs kept", lambda r: f"{r['kept_runs']:,}"),
        ("tables before (MB)", lambda r: f"{r['bytes_before'] / 1e6:.0f}"),
        ("tables after (MB)", lambda r: f"{r['bytes_after'] / 1e6:.0f}"),
    ]
    for label, fmt in rows:
        print(f"{label:32}" + "".join(f"{fmt(results[n]):>18}" for n in names))


if __name__ == "__main__":
    main()
