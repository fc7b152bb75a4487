"""Database faults under load: connections killed with pg_terminate_backend, PostgreSQL restarted.
The server reconnects by itself; every run completes and no step output is stored twice."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from pgqueue.db import embedded, migrate
from tests.compat.conftest import PY_APP_FUNCTIONS, start_py_app, start_server, sync_via_put
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow


def _send_durable(server_url: str, n: int, tag: str) -> list[str]:
    events = [{"name": "compat/durable", "data": {"n": f"{tag}-{i}", "delay": 0.02}} for i in range(n)]
    # Like the SDKs: a 5xx is retried with the same id seed, so a retry cannot duplicate events.
    seed = f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"
    with httpx.Client(base_url=server_url, timeout=30) as c:
        for _ in range(5):
            r = c.post("/e/key", json=events, headers={"x-inngest-event-id-seed": seed})
            if r.status_code < 500:
                break
            time.sleep(0.5)
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


OBSERVER = "pgqueue-test-observer"  # the killer spares the test's own connections


def _all_completed(database_url: str, event_ids: list[str]) -> bool:
    with psycopg.connect(database_url, application_name=OBSERVER) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM pgqueue.runs "
            "WHERE event_id = ANY(%s)", (event_ids,)).fetchone()
    return row == (len(event_ids), len(event_ids))


def _assert_outputs_once(database_url: str, event_ids: list[str]) -> None:
    with psycopg.connect(database_url, application_name=OBSERVER) as conn:
        rows = conn.execute(
            "SELECT r.id, count(s.*) FROM pgqueue.runs r JOIN pgqueue.steps s ON s.run_id = r.id "
            "WHERE r.event_id = ANY(%s) GROUP BY r.id", (event_ids,)).fetchall()
        outputs = conn.execute(
            "SELECT r.output FROM pgqueue.runs r WHERE r.event_id = ANY(%s)", (event_ids,)).fetchall()
    assert len(rows) == len(event_ids)
    assert all(n == 3 for _, n in rows)  # one stored output per step (the primary key allows no more)
    assert all(len(o[0]) == 3 for o in outputs)


def test_terminated_connections_are_survived(database_url: str, pg_admin_url: str) -> None:
    server = start_server(database_url)
    app = start_py_app(server)
    stop = threading.Event()
    killed = 0
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]

    def killer() -> None:
        nonlocal killed
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            while not stop.wait(1.5):
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s",
                    (dbname, OBSERVER)).fetchall()
                killed += len(rows)

    try:
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        event_ids: list[str] = []
        for round_ in range(4):
            event_ids += _send_durable(server.url, 25, f"t{round_}")
            time.sleep(1)
        wait_until(lambda: _all_completed(database_url, event_ids), timeout=120, interval=1,
                   message="all runs completed despite terminated connections")
        stop.set()
        thread.join(timeout=10)
        assert killed > 0
        _assert_outputs_once(database_url, event_ids)
        # Nothing stays leased past its lease.
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE lease_expires_at < now()").fetchone() == (0,)
    finally:
        stop.set()
        app.proc.terminate()
        server.proc.terminate()


def test_postgres_restart_mid_load() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-"))
    pg = embedded.start(folder / "data", settings={"fsync": "off", "synchronous_commit": "off"})
    server = app = None
    try:
        migrate.migrate(pg.url)
        server = start_server(pg.url)
        app = start_py_app(server)
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        event_ids = _send_durable(server.url, 60, "restart")
        time.sleep(1.0)
        # Restart in place (same port, same URL): the server must reconnect by itself.
        ctl = [str(pg.pg_bin / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w", "-l", str(pg.log_file), "restart"]
        if pg.run_as:
            ctl = ["runuser", "-u", pg.run_as, "--", *ctl]
        subprocess.run(ctl, check=True, capture_output=True, timeout=60)
        wait_until(lambda: _all_completed(pg.url, event_ids), timeout=120, interval=1,
                   message="all runs completed after the restart")
        _assert_outputs_once(pg.url, event_ids)
    finally:
        if app:
            app.proc.terminate()
        if server:
            server.proc.terminate()
        pg.stop(mode="immediate", force=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(pg.data_dir, ignore_errors=True)
