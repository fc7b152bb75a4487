"""What a run costs PostgreSQL to keep: WAL written and bytes kept per 3-step run of the official
Python SDK over HTTP, with the same measurement of another revision of pgqueue in the same run.

For each revision (the working tree, and `--baseline-ref REF` checked out into a temporary git
worktree), on its own fresh embedded PostgreSQL 15 (fsync on, the cluster's default checkpoint
settings): start `pgqueue dev` from that revision and the SDK bench app, run a warm-up, CHECKPOINT
(so every page a run touches first pays its full-page image inside the window, as it does in
production once per checkpoint), then send `--runs` events and wait for every run to complete.
Printed per run: WAL bytes, records and full-page images (pg_stat_wal), bytes kept by the history
tables (heap + TOAST, and indexes, each table with its partitions), `runs` updates and the share of
them that were HOT, queue items inserted.

Usage: python bench/history.py [--runs 1000] [--baseline-ref origin/main]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.e2e import throughput  # noqa: E402
from pgqueue.db import embedded  # noqa: E402
from tests.helpers.procs import free_port, start_process, wait_http  # noqa: E402

HISTORY = ("events", "runs", "steps", "attempts")
CHURN = ("queue_items", "event_inbox", "pauses")

# Every pgqueue relation with the table it belongs to (a partition's root, an index's table, a
# TOAST table's owner), so partitioned and plain layouts are summed the same way.
_SIZES = """
WITH RECURSIVE rels AS (
    SELECT c.oid, c.relname::text AS family
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'pgqueue' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  UNION ALL
    SELECT i.inhrelid, rels.family FROM pg_inherits i JOIN rels ON i.inhparent = rels.oid
)
SELECT rels.family,
       sum(pg_relation_size(rels.oid) + coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0))::bigint,
       sum(pg_indexes_size(rels.oid))::bigint
FROM rels JOIN pg_class c ON c.oid = rels.oid
GROUP BY rels.family
"""

_TABLE_STATS = """
WITH RECURSIVE rels AS (
    SELECT c.oid, c.relname::text AS family
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'pgqueue' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  UNION ALL
    SELECT i.inhrelid, rels.family FROM pg_inherits i JOIN rels ON i.inhparent = rels.oid
)
SELECT rels.family, sum(s.n_tup_ins)::bigint, sum(s.n_tup_upd)::bigint, sum(s.n_tup_hot_upd)::bigint,
       sum(s.n_tup_del)::bigint
FROM rels JOIN pg_stat_user_tables s ON s.relid = rels.oid
GROUP BY rels.family
"""


def postgres_cpu_s(data_dir: str) -> float:
    """CPU seconds (user + system) of the cluster's postmaster and its live children."""
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def snapshot(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, pg_current_wal_insert_lsn()::text, "
                           "current_setting('data_directory')").fetchone()
        sizes = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(_SIZES)}
        stats = {r[0]: tuple(int(x) for x in r[1:]) for r in conn.execute(_TABLE_STATS)}
    assert wal is not None and lsn is not None
    return {"records": int(wal[0]), "fpi": int(wal[1]), "wal": int(lsn[0]), "lsn": lsn[1], "data_dir": lsn[2],
            "sizes": sizes, "stats": stats, "cpu": postgres_cpu_s(lsn[2])}


@contextlib.contextmanager
def revision(ref: str | None) -> Iterator[Path]:
    """The working tree, or `ref` checked out into a temporary git worktree."""
    if ref is None:
        yield ROOT
        return
    folder = Path(tempfile.mkdtemp(prefix="pgqueue-rev-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder / "tree"), ref], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder / "tree"
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder / "tree")], cwd=ROOT,
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def measure(code: Path, runs: int, warmup: int, waldump: bool = False, past_days: int = 0) -> dict[str, Any]:
    """Every figure for one revision of pgqueue, on its own fresh cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="pgqueue-history-"))
    pg = embedded.start(tmp / "pgdata")
    procs = []
    env = {"PYTHONPATH": str(code), "DATABASE_URL": pg.url, "PGQUEUE_LOG_LEVEL": "warning"}
    try:
        subprocess.run([sys.executable, "-m", "pgqueue", "migrate"], cwd=code, env={**os.environ, **env},
                       check=True, capture_output=True)
        if past_days:  # the partitions a database with that much history has (when partitioned)
            with psycopg.connect(pg.url, autocommit=True) as conn:
                if conn.execute("SELECT to_regclass('pgqueue.history_partitions') IS NOT NULL").fetchone()[0]:
                    conn.execute("SELECT pgqueue.history_backfill_v1(date_trunc('day', now())"
                                 " - make_interval(days => %s), interval '1 day')", (past_days,))
        port, app_port = free_port(), free_port()
        srv = start_process("history-server", [sys.executable, "-m", "pgqueue", "dev", "--port", str(port)],
                            env=env, url=f"http://127.0.0.1:{port}", cwd=code)
        procs.append(srv)
        wait_http(srv, "/health")
        app = start_process(
            "history-app",
            [sys.executable, "-m", "uvicorn", "bench.bench_app:app", "--port", str(app_port), "--log-level",
             "warning"],
            env={"INNGEST_DEV": srv.url, "INNGEST_BASE_URL": srv.url, "PYTHONPATH": str(ROOT)},
            url=f"http://127.0.0.1:{app_port}",
        )
        procs.append(app)
        wait_http(app, "/first-steps")
        httpx.put(app.url + "/api/inngest", timeout=30)
        time.sleep(0.5)
        throughput(srv.url, pg.url, warmup)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        time.sleep(1.5)  # backends flush their table statistics at most once a second
        before = snapshot(pg.url)
        rate = throughput(srv.url, pg.url, runs)
        time.sleep(1.5)
        after = snapshot(pg.url)
        if waldump:
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute("SELECT pg_switch_wal()")
            tool = Path(embedded.find_pg_bin() or "") / "pg_waldump"
            done = subprocess.run([str(tool), "--stats=record", "-p", f"{after['data_dir']}/pg_wal",
                                   "-s", before["lsn"], "-e", after["lsn"]], capture_output=True, text=True)
            print(f"--- pg_waldump --stats=record over the window ({code}):\n{done.stdout}{done.stderr}")
        with psycopg.connect(pg.url) as conn:
            settings = dict(conn.execute(  # type: ignore[arg-type]
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('checkpoint_timeout', 'max_wal_size', 'full_page_writes', 'fsync', 'server_version')"
            ).fetchall())
    finally:
        for proc in procs:
            proc.terminate()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"before": before, "after": after, "runs": runs, "rate": rate, "settings": settings}


def per_run(m: dict[str, Any]) -> dict[str, float]:
    b, a, n = m["before"], m["after"], m["runs"]
    out = {
        "runs/s": m["rate"],
        "PostgreSQL CPU ms": (a["cpu"] - b["cpu"]) * 1000 / n,
        "WAL bytes": (a["wal"] - b["wal"]) / n,
        "WAL records": (a["records"] - b["records"]) / n,
        "full-page images": (a["fpi"] - b["fpi"]) / n,
    }
    kept = 0.0
    for family in HISTORY:
        heap = (a["sizes"].get(family, (0, 0))[0] - b["sizes"].get(family, (0, 0))[0]) / n
        index = (a["sizes"].get(family, (0, 0))[1] - b["sizes"].get(family, (0, 0))[1]) / n
        out[f"  {family} heap"] = heap
        out[f"  {family} indexes"] = index
        kept += heap + index
    out["bytes kept (history tables)"] = kept
    ins0, upd0, hot0, _ = b["stats"].get("runs", (0, 0, 0, 0))
    ins1, upd1, hot1, _ = a["stats"].get("runs", (0, 0, 0, 0))
    out["runs updates"] = (upd1 - upd0) / n
    out["runs updates HOT %"] = 100.0 * (hot1 - hot0) / max(1, upd1 - upd0)
    q0, q1 = b["stats"].get("queue_items", (0, 0, 0, 0)), a["stats"].get("queue_items", (0, 0, 0, 0))
    out["queue items inserted"] = (q1[0] - q0[0]) / n
    out["queue items updated"] = (q1[1] - q0[1]) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--baseline-ref", help="a git revision measured the same way, in the same run")
    parser.add_argument("--waldump", action="store_true", help="print pg_waldump --stats for each window")
    parser.add_argument("--past-days", type=int, default=0,
                        help="make daily partitions this many days back first (the sets retention keeps)")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    settings: dict[str, str] = {}
    if args.baseline_ref:
        with revision(args.baseline_ref) as code:
            m = measure(code, args.runs, args.warmup, args.waldump, args.past_days)
            results[args.baseline_ref] = per_run(m)
    m = measure(ROOT, args.runs, args.warmup, args.waldump, args.past_days)
    settings = m["settings"]
    results["this tree"] = per_run(m)
    print(f"PostgreSQL {settings.get('server_version')} fsync={settings.get('fsync')} "
          f"full_page_writes={settings.get('full_page_writes')} checkpoint_timeout={settings.get('checkpoint_timeout')}s "
          f"max_wal_size={settings.get('max_wal_size')}MB; {args.runs} 3-step runs of the official Python SDK, "
          "per run, a CHECKPOINT before the window")
    names = list(results)
    print(f"{'per 3-step run':34}" + "".join(f"{n:>16}" for n in names) + ("        ratio" if len(names) == 2 else ""))
    for key in results[names[-1]]:
        values = [results[n].get(key, 0.0) for n in names]
        line = f"{key:34}" + "".join(f"{v:16.1f}" for v in values)
        if len(names) == 2 and values[0]:
            line += f"{values[1] / values[0]:13.2f}"
        print(line)


if __name__ == "__main__":
    main()
