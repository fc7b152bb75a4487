"""Sustained load with retention running: does anything drift?

A pgqueue dev server and the official Python SDK's 3-step bench app on a fresh embedded PostgreSQL
15 (fsync on), hourly history partitions and a 2-hour retention window, with six hours of older
history already there (`--backfill-runs` runs per hour, made in backfilled sets) so that retention
drops partitions while the load runs. Events are sent at a fixed `--rate` per second for
`--minutes`; every minute prints runs completed per second, p50/p99 run latency (event accepted to
run ended, from the runs that ended that minute), WAL written per second, the size of the history
tables and of the queue, the queue's dead rows and the age of its last autovacuum, and the oldest
transaction id's age. Flat columns are the result.

Usage: python bench/soak.py [--minutes 30] [--rate 100] [--backfill-runs 20000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgqueue.db import embedded  # noqa: E402
from tests.helpers.procs import free_port, start_process, wait_http  # noqa: E402

_BACKFILL = """
SELECT pgqueue.history_backfill_v1(date_trunc('hour', now()) - interval '6 hours', interval '1 hour');
INSERT INTO pgqueue.apps (name, url) VALUES ('soak-old', 'http://127.0.0.1:9');
INSERT INTO pgqueue.functions (app_id, slug, name, url, config)
SELECT id, 'soak-old-f', 'f', 'http://127.0.0.1:9', '{}' FROM pgqueue.apps WHERE name = 'soak-old';
"""
_OLD_HOUR = """
WITH t AS (SELECT date_trunc('hour', now()) - make_interval(hours => %(hours_ago)s) AS at),
ids AS (
    SELECT n, t.at + make_interval(secs => n * 3600.0 / %(n)s) AS at FROM t, generate_series(1, %(n)s) AS n
), k AS (
    SELECT n, at, left(pgqueue.ulid_bound_v1(at), 10) || 'E' || lpad(n::text, 15, '0') AS event_id,
           left(pgqueue.ulid_bound_v1(at), 10) || 'R' || lpad(n::text, 15, '0') AS run_id FROM ids
), ev AS (
    INSERT INTO pgqueue.events (id, name, data, ts, received_at) SELECT event_id, 'soak/old', '{}', 0, at FROM k
), r AS (
    INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, created_at, started_at,
                              ended_at, output)
    SELECT run_id, (SELECT id FROM pgqueue.functions WHERE slug = 'soak-old-f'), event_id, ARRAY[event_id],
           'completed', 1, at, at, at + interval '1 second', '6' FROM k
)
INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt, started_at, created_at)
SELECT run_id, 'step-' || s, 'step', 'StepRun', '{"data": 1}', 0, at, at FROM k, generate_series(1, 3) AS s
"""
_MINUTE = """
SELECT count(*) AS ended,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.ended_at - r.created_at)) * 1000 AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.ended_at - r.created_at)) * 1000 AS p99
FROM pgqueue.runs r
WHERE r.id >= pgqueue.ulid_bound_v1(%(since)s - interval '10 minutes') AND r.ended_at >= %(since)s
  AND r.ended_at < %(until)s AND r.function_id = (SELECT id FROM pgqueue.functions WHERE slug = 'soak-noop-3')
"""
_STATE = """
SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS wal,
       (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
        WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'r'
          AND (c.relname ~ '^(events|runs|steps|attempts)_')) AS history,
       pg_total_relation_size('pgqueue.queue_items') AS queue,
       s.n_dead_tup AS queue_dead,
       extract(epoch FROM now() - greatest(s.last_autovacuum, s.last_vacuum)) AS queue_vacuumed_s_ago,
       (SELECT max(age(datfrozenxid)) FROM pg_database) AS xid_age,
       (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'pgqueue.runs'::regclass) AS runs_partitions
FROM pg_stat_user_tables s WHERE s.relid = 'pgqueue.queue_items'::regclass
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=int, default=100, help="events per second")
    parser.add_argument("--backfill-runs", type=int, default=20_000, help="old runs per backfilled hour")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-soak-"))
    pg = embedded.start(tmp / "pgdata")
    env = {"DATABASE_URL": pg.url, "PGQUEUE_LOG_LEVEL": "warning", "PGQUEUE_PARTITION_HOURS": "1",
           "PGQUEUE_RETENTION_DAYS": str(2 / 24)}
    procs = []
    stop = threading.Event()
    try:
        subprocess.run([sys.executable, "-m", "pgqueue", "migrate"], cwd=ROOT, env={**os.environ, **env},
                       check=True, capture_output=True)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(_BACKFILL)
            for hours_ago in range(6, 0, -1):
                conn.execute(_OLD_HOUR, {"hours_ago": hours_ago, "n": args.backfill_runs})
            conn.execute("VACUUM ANALYZE")
        port, app_port = free_port(), free_port()
        srv = start_process("soak-server", [sys.executable, "-m", "pgqueue", "dev", "--port", str(port)],
                            env={**env, "BENCH_APP_ID": "soak"}, url=f"http://127.0.0.1:{port}")
        procs.append(srv)
        wait_http(srv, "/health")
        app = start_process(
            "soak-app",
            [sys.executable, "-m", "uvicorn", "bench.bench_app:app", "--port", str(app_port), "--log-level", "warning"],
            env={"INNGEST_DEV": srv.url, "INNGEST_BASE_URL": srv.url, "BENCH_APP_ID": "soak"},
            url=f"http://127.0.0.1:{app_port}",
        )
        procs.append(app)
        wait_http(app, "/first-steps")
        httpx.put(app.url + "/api/inngest", timeout=30)
        time.sleep(1)

        def send() -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                n = 0
                next_at = time.monotonic()
                while not stop.is_set():
                    batch = [{"name": "bench/noop", "data": {"k": f"s{n + i}"}} for i in range(args.rate // 10)]
                    c.post("/e/soak", json=batch)
                    n += len(batch)
                    next_at += 0.1
                    time.sleep(max(0.0, next_at - time.monotonic()))

        sender = threading.Thread(target=send, name="soak-sender", daemon=True)
        sender.start()
        print(f"PostgreSQL 15 fsync=on; {args.rate} events/s of the official Python SDK's 3-step function for "
              f"{args.minutes} min; hourly partitions, 2-hour retention, 6 hours of older history "
              f"({args.backfill_runs:,} runs an hour) to expire")
        print(f"{'min':>4}{'runs/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'WAL kB/s':>10}{'history MB':>12}{'queue MB':>10}"
              f"{'q dead':>8}{'q vac s':>9}{'xid age':>10}{'parts':>7}")
        with psycopg.connect(pg.url, autocommit=True) as conn:
            first = conn.execute(_STATE).fetchone()
            assert first is not None
            last = tuple(float(v) if v is not None else None for v in first)
            since = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            for minute in range(1, args.minutes + 1):
                time.sleep(60)
                until = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
                ended, p50, p99 = conn.execute(_MINUTE, {"since": since, "until": until}).fetchone()  # type: ignore[misc]
                row = conn.execute(_STATE).fetchone()
                assert last is not None and row is not None
                state = tuple(float(v) if v is not None else None for v in row)  # numeric sums arrive as Decimal
                seconds = (until - since).total_seconds()
                print(f"{minute:4d}{ended / seconds:8.1f}{p50 or 0:9.0f}{p99 or 0:9.0f}"
                      f"{(state[0] - last[0]) / seconds / 1000:10.1f}{state[1] / 1e6:12.1f}{state[2] / 1e6:10.2f}"
                      f"{state[3]:8.0f}{state[4] or 0:9.0f}{state[5]:10.0f}{state[6]:7.0f}", flush=True)
                last, since = state, until
        stop.set()
        sender.join(timeout=5)
    finally:
        stop.set()
        for proc in procs:
            proc.terminate()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
