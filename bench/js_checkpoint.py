"""Checkpointing benchmark: a 3-step function run through the official JS SDK (`inngest` 4.x on
express, tests/compat/js_app/checkpoint.js), with checkpointing on and off in the same run.

With checkpointing (PGQUEUE_CHECKPOINTING=1, the default) the SDK runs the three steps in one request
and stores each with POST /v1/checkpoint/{runId}/async; without it, every step is its own request
(4 per run). Prints, for each: runs/s from events accepted to runs completed, app requests per run
(counted by the app), and CPU seconds per run of the pgqueue server, the app and the database's
backends (Linux /proc; on a shared machine CPU per run is steadier than runs/s), then the ratios.

`--scenario parallel` runs instead two sequential steps, two parallel steps and three more steps
(tests/compat/js_app/wire.js): with checkpointing the calls go back to it once the parallel steps
have drained, so a run takes 4 requests (it took 10 while pgqueue kept disable_immediate_execution
on after them).

Usage: python bench/js_checkpoint.py [--runs 500] [--scenario three|parallel] [--database-url URL]
Without --database-url (or DATABASE_URL) it uses pgqueue's embedded PostgreSQL (fsync on). Needs
Node.js and the JS app's node_modules (`npm ci` in tests/compat/js_app).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import database, pg_settings  # noqa: E402
from bench.e2e import throughput  # noqa: E402
from tests.helpers.procs import free_port, pgqueue_argv, start_process, wait_http  # noqa: E402

JS_APP = ROOT / "tests" / "compat" / "js_app"
# scenario -> (app script, event, what a run is)
SCENARIOS = {
    "three": ("checkpoint.js", "ckpt/three", "a 3-step function"),
    "parallel": ("wire.js", "wire/parallel", "2 steps, 2 parallel steps, 3 steps"),
}


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_snapshot(server_pid: int, app_pid: int, database_url: str) -> dict[str, float]:
    with psycopg.connect(database_url) as conn:
        backends = [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()]
    return {"server": sum(map(_cpu_s, _tree(server_pid))), "app": sum(map(_cpu_s, _tree(app_pid))),
            "postgres": sum(map(_cpu_s, backends))}


def requests_made(app_base: str) -> int:
    ledger = httpx.get(app_base + "/ledger", timeout=30).json()
    if "requests" in ledger:  # checkpoint.js: run id -> requests
        return sum(ledger["requests"].values())
    return sum(len(calls) for calls in ledger["calls"].values())  # wire.js: run id -> [call, ...]


def measure(
    database_url: str, runs: int, *, checkpointing: bool, scenario: str = "three"
) -> dict[str, float]:
    """A pgqueue dev server (checkpointing on or off) and a fresh JS app on `database_url`."""
    node = shutil.which("node")
    if node is None or not (JS_APP / "node_modules" / "inngest").is_dir():
        raise SystemExit("needs Node.js and `npm ci` in tests/compat/js_app")
    procs = []
    try:
        port, app_port = free_port(), free_port()
        server = start_process(
            "bench-server", pgqueue_argv("dev", "--port", str(port)),
            env={"DATABASE_URL": database_url, "PGQUEUE_LOG_LEVEL": "warning",
                 "PGQUEUE_CHECKPOINTING": "1" if checkpointing else "0"},
            url=f"http://127.0.0.1:{port}",
        )
        procs.append(server)
        wait_http(server, "/health")
        script, event, _ = SCENARIOS[scenario]
        app = start_process(
            "bench-js-app", [node, script],
            env={"INNGEST_DEV": server.url, "INNGEST_BASE_URL": server.url, "INNGEST_SIGNING_KEY": "",
                 "INNGEST_EVENT_KEY": "", "JS_APP_ID": "bench-js", "PORT": str(app_port)},
            url=f"http://127.0.0.1:{app_port}", cwd=JS_APP,
        )
        procs.append(app)
        wait_http(app, "/ledger")
        httpx.put(app.url + "/api/inngest", timeout=30)
        time.sleep(1.0)
        throughput(server.url, database_url, 50, event)  # warm-up (JIT, connections)
        before = requests_made(app.url)
        cpu_before = cpu_snapshot(server.popen.pid, app.popen.pid, database_url)
        rate = throughput(server.url, database_url, runs, event)
        cpu_after = cpu_snapshot(server.popen.pid, app.popen.pid, database_url)
        per_run = (requests_made(app.url) - before) / runs
    finally:
        for p in procs:
            p.terminate()
    cpu_ms = {f"cpu_{k}_ms": (cpu_after[k] - cpu_before[k]) * 1000 / runs for k in cpu_before}
    return {"runs_per_s": rate, "requests_per_run": per_run, **cpu_ms,
            "cpu_total_ms": sum(cpu_ms.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="three")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with database(args.database_url) as url:
        off = measure(url, args.runs, checkpointing=False, scenario=args.scenario)
        on = measure(url, args.runs, checkpointing=True, scenario=args.scenario)
        settings = pg_settings(url)
    print(f"PostgreSQL {settings.get('server_version')} fsync={settings.get('fsync')} "
          f"synchronous_commit={settings.get('synchronous_commit')}; one node process for the app; "
          f"{args.runs} runs of {SCENARIOS[args.scenario][2]} (JS SDK)")
    print(f"{'measure':<44}{'off':>12}{'on':>12}{'on/off':>10}")
    for key, label in (("runs_per_s", "runs/s, events accepted -> runs completed"),
                       ("requests_per_run", "app requests per run"),
                       ("cpu_server_ms", "CPU ms per run: pgqueue server"),
                       ("cpu_app_ms", "CPU ms per run: JS app (node)"),
                       ("cpu_postgres_ms", "CPU ms per run: PostgreSQL backends"),
                       ("cpu_total_ms", "CPU ms per run: all three")):
        print(f"{label:<44}{off[key]:>12.2f}{on[key]:>12.2f}{on[key] / off[key]:>10.2f}")


if __name__ == "__main__":
    main()
