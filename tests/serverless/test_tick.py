"""End to end without a long-lived worker: a `pgqueue serve --no-workers` API, an app written with
the official Python SDK, and nothing but repeated executor-handler invocations (the EventBridge
schedule and kicks) to run a multi-step function that sleeps in the middle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.compat.conftest import (
    EVENT_KEY,
    FAST_ENV,
    PY_APP_FUNCTIONS,
    SIGNING_KEY,
    start_py_app,
    start_server,
    sync_via_put,
)
from tests.helpers.procs import ROOT
from tests.serverless.conftest import LambdaContext, fixture


@pytest.mark.compat
def test_a_sleeping_function_completes_through_executor_invocations_only(
    database_url: str, handlers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API leaves the event in the inbox: the executor's runner starts the run.
    server = start_server(database_url, mode="serve", extra_args=("--no-workers",),
                          env={"PGQUEUE_INLINE_START": "0"})
    app = None
    try:
        app = start_py_app(server)
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        for key, value in {
            "DATABASE_URL": database_url,
            "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
            "PGQUEUE_EVENT_KEYS": EVENT_KEY,
            "PGQUEUE_BACKOFF_SCALE": "0.002",
            "PGQUEUE_ALLOW_LOOPBACK": "1",
            "PGQUEUE_TICK_LINGER_S": "0",  # each invocation stops when idle: the sleep spans two
            "PGQUEUE_INLINE_START": "0",  # the executor's runner, not the API, starts the run
        }.items():
            monkeypatch.setenv(key, value)
        executor = handlers("executor_handler")
        event_id = server.send("compat/sleep", {"seconds": 2})
        time.sleep(1.0)  # the API alone does nothing: no runner, no worker
        assert server.runs_for(event_id) == []

        results: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 45
        events = [fixture("eventbridge_scheduled"), fixture("kick")]
        while time.monotonic() < deadline:
            results.append(executor.handler(events[len(results) % 2], LambdaContext(remaining_ms=20_000)))
            runs = server.runs_for(event_id)
            if runs and runs[0]["status"] not in ("Queued", "Running"):
                break
            time.sleep(0.3)

        [run] = runs
        assert run["status"] == "Completed", (run, results)
        assert run["output"]["slept"] >= 2.0
        # the first invocation ran up to the sleep and returned idle, the sleep parked as a delayed
        # item; a later invocation woke it and finished the run
        assert len(results) >= 2
        assert results[0]["runs_created"] == 1 and results[0]["idle"] is True
        assert results[0]["scheduled"] == 1
        assert all(r["items_released"] == 0 for r in results)
        assert results[-1]["due"] == results[-1]["leased"] == results[-1]["scheduled"] == 0
        # every step body ran exactly once across the invocations
        assert app.count(run["run_id"], "before") == 1
        assert app.count(run["run_id"], "after") == 1
        assert executor.pool_opens == 1
    finally:
        if app is not None:
            app.proc.terminate()
        server.proc.terminate()


def test_pgqueue_tick_drives_a_dev_server_started_without_workers(database_url: str) -> None:
    server = start_server(database_url, mode="dev", extra_args=("--no-workers",),
                          env={"PGQUEUE_INLINE_START": "0"})
    try:
        event_id = server.send("cli/nothing-listens", {"n": 1})
        env = {**FAST_ENV, "DATABASE_URL": database_url, "PGQUEUE_LOG_LEVEL": "warning"}
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "tick", "--budget", "10", "--metrics", "pgqueue-cli"],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.proc.terminate()

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    emf, result = lines[0], lines[-1]
    assert emf["FunctionName"] == "pgqueue-cli" and emf["InboxEvents"] == 0
    # the dev server stored the event and left it in the inbox; the tick consumed it (no function listens)
    assert event_id and result["events_seen"] == 1 and result["runs_created"] == 0
    assert result["idle"] is True and result["inbox"] == 0
