"""Debounce and batch windows with two runner processes (`pgqueue serve` plus `pgqueue worker`)
and the official Python SDK: simultaneous events from two OS processes, spread over both runners,
still make exactly one run per debounce window and never overfill a batch.

The interleaving that used to open two windows is narrow end to end (it passes most of the time
without the fix); tests/concurrency/test_flow_windows.py forces it deterministically."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.compat.conftest import App, Server, start_server, start_worker, sync_via_put
from tests.compat.test_python_flow_control import FLOW_FUNCTIONS, spans, start_flow_app
from tests.compat.test_python_run_control import blast
from tests.helpers.procs import Proc, wait_until

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def two_runners(module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url)
    worker: Proc | None = None
    app = None
    try:
        worker = start_worker(module_database_url, server)
        app = start_flow_app(server)
        sync_via_put(app, server, expect_functions=FLOW_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        if worker:
            assert worker.terminate() == 0, worker.log()
        server.proc.terminate()


def test_one_debounced_run_per_window(two_runners: tuple[Server, App]) -> None:
    server, app = two_runners
    blast(server, {"name": "flow/debounce", "data": {"key": "race", "n": 1}})
    wait_until(lambda: [s for s in spans(app, "debounced") if s["key"] == "race"], timeout=30,
               message="the debounced run")
    time.sleep(2)  # a second window's run would have started by now
    assert len([s for s in spans(app, "debounced") if s["key"] == "race"]) == 1
    events = [e for e in server.get("/v1/events?name=flow/debounce&limit=100")["data"]
              if e["data"]["key"] == "race"]
    assert len(events) == 20
    assert sum(e["skip_reason"] is None for e in events) == 1


def test_batches_never_overfill(two_runners: tuple[Server, App]) -> None:
    server, app = two_runners
    blast(server, {"name": "flow/batch", "data": {"n": 7}})
    wait_until(lambda: sum(s["size"] for s in spans(app, "batched")) >= 20, timeout=30,
               message="all 20 events batched")
    time.sleep(1)
    sizes = [s["size"] for s in spans(app, "batched")]
    assert sum(sizes) == 20 and max(sizes) <= 3, sizes
