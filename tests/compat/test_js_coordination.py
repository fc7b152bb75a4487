"""Coordination with the official JS SDK: waitForEvent (`match` and `if`), cancelOn, invoke.

The JS twin of test_python_coordination.py, against the same-named functions in
tests/compat/js_app/server.js. The JS SDK compiles `match: "data.id"` into
`event.data.id == async.data.id` (trigger side on the left), the mirror image of the Python app's
`async.data.id == event.data.id`; failed and timed-out invokes must reach user code as thrown
errors whose `name` and `message` are strings.
"""

from __future__ import annotations

import random
import string
import time

import pytest

from tests.compat.conftest import App, Server
from tests.compat.invoke_checks import fan_invoke_under_a_limit
from tests.compat.js_fixtures import js_stack  # a fixture, used by name
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat


def _wait_parked(server: Server, app: App, event_id: str) -> str:
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "before") == 1, timeout=20, message="step before the wait")
    time.sleep(0.5)  # let the pause be stored
    return str(run["run_id"])


def test_sync_carries_the_compiled_match(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    fns = {f["slug"]: f for f in server.functions(app.app_id)}
    assert fns["js-compat-cancellable"]["config"]["cancel"] == [
        {"event": "compat/cancel", "if": "event.data.id == async.data.id"}
    ]
    assert fns["js-compat-child"]["triggers"] == [{"event": "compat/child-direct"}]


def test_wait_for_event_matches_only_its_own_id(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    first = server.send("compat/wait", {"id": "w1"})
    second = server.send("compat/wait", {"id": "w2"})
    _wait_parked(server, app, first)
    _wait_parked(server, app, second)
    server.send("compat/approved", {"id": "nobody"})
    server.send("compat/approved", {"id": "w2", "by": "bob"})
    [run2] = server.wait_runs(second)
    assert run2["status"] == "Completed", run2
    assert run2["output"] == {"name": "compat/approved", "data": {"id": "w2", "by": "bob"}}
    assert server.runs_for(first)[0]["status"] == "Running"
    server.send("compat/approved", {"id": "w1", "by": "ann"})
    [run1] = server.wait_runs(first)
    assert run1["status"] == "Completed", run1
    assert run1["output"]["data"] == {"id": "w1", "by": "ann"}


def test_wait_for_event_times_out_with_null(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat/wait", {"id": "t1", "timeout": 1})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] is None


def test_event_sent_before_the_pause_does_not_match(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    server.send("compat/approved", {"id": "early"})
    time.sleep(0.3)
    event_id = server.send("compat/wait", {"id": "early", "timeout": 2})
    _wait_parked(server, app, event_id)
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] is None  # timed out: the earlier event was not taken


def test_hostile_values_match_by_value_only(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    noise = "".join(random.Random(5).choice(string.printable) for _ in range(100_000))
    hostile = "x'; DROP TABLE pgqueue.runs; -- \" \\u0041 ünï €" + noise
    event_id = server.send("compat/wait", {"id": hostile})
    _wait_parked(server, app, event_id)
    server.send("compat/approved", {"id": hostile[:-1]})
    server.send("compat/approved", {"id": hostile, "ok": True})
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"]["data"]["ok"] is True
    assert server.get("/v1/runs?limit=1")["data"]  # tables intact


def test_wait_if_expression_with_a_numeric_comparison(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/wait-if", {"id": "n1"})
    _wait_parked(server, app, event_id)
    server.send("compat/approved", {"id": "n1", "amount": 10})  # not > 10
    server.send("compat/approved", {"id": "n1", "amount": "99"})  # a string, not a number
    server.send("compat/approved", {"id": "other", "amount": 50})  # another id
    time.sleep(1.5)
    assert server.runs_for(event_id)[0]["status"] == "Running"
    server.send("compat/approved", {"id": "n1", "amount": 10.5})
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"name": "compat/approved", "data": {"id": "n1", "amount": 10.5}}


def test_cancel_on_matching_event(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    keep = server.send("compat/cancellable", {"id": "keep", "sleep": 2})
    stop = server.send("compat/cancellable", {"id": "stop", "sleep": 30})
    [run] = server.wait_runs(stop, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "first") == 1, timeout=20, message="first step")
    server.send("compat/cancel", {"id": "stop"})
    [cancelled] = server.wait_runs(stop, timeout=20)
    assert cancelled["status"] == "Cancelled", cancelled
    [kept] = server.wait_runs(keep, timeout=30)
    assert kept["status"] == "Completed", kept
    assert kept["output"] == "second"
    assert app.count(run["run_id"], "second") == 0


def test_invoke_returns_the_child_result(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat/invoke", {"n": 21})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] == {"result": {"doubled": 42, "invoked_by": "inngest/function.invoked"}}


def test_invoke_starts_one_child_each_under_its_concurrency_limit(js_stack: tuple[Server, App]) -> None:
    fan_invoke_under_a_limit(*js_stack, child_slug="js-compat-limited-child")


def test_invoke_child_failure_propagates(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat/invoke", {"mode": "fail"})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    output = run["output"]
    assert isinstance(output["error"], str) and output["error"], output
    assert isinstance(output["message"], str), output
    assert "child failed on purpose" in output["message"]


def test_invoke_timeout(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat/invoke", {"mode": "slow", "timeout": 1})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["error"] == "InngestInvokeTimeoutError"
    assert isinstance(run["output"]["message"], str) and run["output"]["message"]
