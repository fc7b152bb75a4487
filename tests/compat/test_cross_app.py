"""Two apps, two SDKs, one server: the JS app invokes the Python app's function.

Both tests/compat/apps/py_app.py (app id `py-compat`) and tests/compat/js_app/server.js (app id
`js-compat`) are synced to one pgqueue server. They define same-named functions triggered by the
same `compat/*` events, so every event sent here starts runs in the apps the test means:
`compat/cross-invoke` exists only in the JS app, while `compat/invoke` and `compat/wait` start one
run in each app and check that the two never cross.

Both directions are exercised: `compat/cross-invoke` (JS invokes Python's `child`) and
`compat/py-cross-invoke` (Python's `cross-invoker` calls `step.invoke_by_id(app_id="js-compat",
function_id="child")`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, App, Server, start_py_app, start_server, sync_via_put
from tests.compat.js_fixtures import JS_FUNCTION_COUNT, start_js_app
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat


class Stack:
    def __init__(self, server: Server, py: App, js: App) -> None:
        self.server, self.py, self.js = server, py, js

    def runs_of(self, slug: str) -> list[dict[str, Any]]:
        return list(self.server.get(f"/v1/runs?function_id={slug}&limit=500")["data"])


@pytest.fixture(scope="module", params=["dev", "serve"])
def both(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[Stack]:
    """One pgqueue server with the Python app and the JS app synced, per mode."""
    server = start_server(module_database_url, mode=request.param)
    started: list[App] = []
    try:
        py = start_py_app(server)
        started.append(py)
        sync_via_put(py, server, expect_functions=PY_APP_FUNCTIONS)
        js = start_js_app(server)
        started.append(js)
        sync_via_put(js, server, expect_functions=JS_FUNCTION_COUNT)
        yield Stack(server, py, js)
    finally:
        for app in started:
            app.proc.terminate()
        server.proc.terminate()


def test_both_apps_stay_synced(both: Stack) -> None:
    py = {f["slug"] for f in both.server.functions("py-compat")}
    js = {f["slug"] for f in both.server.functions("js-compat")}
    assert len(py) == PY_APP_FUNCTIONS and len(js) == JS_FUNCTION_COUNT
    assert {"py-compat-child", "py-compat-invoker"} <= py
    assert {"js-compat-child", "js-compat-invoker", "js-compat-cross-invoker"} <= js


def test_js_invokes_the_python_child(both: Stack) -> None:
    # The module's database outlives one mode's server: compare with the runs already there.
    py_before = {r["run_id"] for r in both.runs_of("py-compat-child")}
    js_before = {r["run_id"] for r in both.runs_of("js-compat-child")}
    event_id = both.server.send("compat/cross-invoke", {"n": 7})
    [run] = both.server.wait_runs(event_id, timeout=30)
    assert run["function_slug"] == "js-compat-cross-invoker"
    assert run["status"] == "Completed", run
    assert run["output"] == {"result": {"doubled": 14, "invoked_by": "inngest/function.invoked"}}
    # The Python child ran (and finished) for it; the JS app's own `child` was not touched.
    [child] = [r for r in both.runs_of("py-compat-child") if r["run_id"] not in py_before]
    assert child["status"] == "Completed", child
    assert child["output"] == {"doubled": 14, "invoked_by": "inngest/function.invoked"}
    assert {r["run_id"] for r in both.runs_of("js-compat-child")} == js_before
    invoked = both.server.get(f"/v1/events/{child['event_id']}")["data"]
    assert invoked["name"] == "inngest/function.invoked"
    assert invoked["data"]["n"] == 7
    assert invoked["data"]["_inngest"]["fn_id"] == "py-compat-child"
    assert invoked["data"]["_inngest"]["correlation_id"].startswith(run["run_id"] + ".")


def test_python_invokes_the_js_child(both: Stack) -> None:
    js_before = {r["run_id"] for r in both.runs_of("js-compat-child")}
    py_before = {r["run_id"] for r in both.runs_of("py-compat-child")}
    event_id = both.server.send("compat/py-cross-invoke", {"n": 4})
    [run] = both.server.wait_runs(event_id, timeout=30)
    assert run["function_slug"] == "py-compat-cross-invoker"
    assert run["status"] == "Completed", run
    assert run["output"] == {"result": {"doubled": 8, "invoked_by": "inngest/function.invoked"}}
    [child] = [r for r in both.runs_of("js-compat-child") if r["run_id"] not in js_before]
    assert child["status"] == "Completed", child
    assert {r["run_id"] for r in both.runs_of("py-compat-child")} == py_before


def test_python_child_failure_reaches_js_as_an_error(both: Stack) -> None:
    event_id = both.server.send("compat/cross-invoke", {"mode": "fail"})
    [run] = both.server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    output = run["output"]
    assert isinstance(output["error"], str) and output["error"], output
    assert isinstance(output["message"], str) and "child failed on purpose" in output["message"], output


def test_python_child_timeout_reaches_js_as_an_error(both: Stack) -> None:
    event_id = both.server.send("compat/cross-invoke", {"mode": "slow", "timeout": 1})
    [run] = both.server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["error"] == "InngestInvokeTimeoutError", run
    assert isinstance(run["output"]["message"], str) and run["output"]["message"]


def test_same_named_invokers_call_their_own_app(both: Stack) -> None:
    """`compat/invoke` starts both apps' `invoker`; each gets its own app's `child`."""
    event_id = both.server.send("compat/invoke", {"n": 5})
    runs = both.server.wait_runs(event_id, count=2, timeout=30)
    by_slug = {r["function_slug"]: r for r in runs}
    assert set(by_slug) == {"py-compat-invoker", "js-compat-invoker"}
    for run in runs:
        assert run["status"] == "Completed", run
        assert run["output"] == {"result": {"doubled": 10, "invoked_by": "inngest/function.invoked"}}


def test_one_event_resumes_a_waiter_in_each_app(both: Stack) -> None:
    event_id = both.server.send("compat/wait", {"id": "both-1"})
    runs = both.server.wait_runs(event_id, count=2, terminal=False)
    apps = {"py-compat-waiter": both.py, "js-compat-waiter": both.js}
    assert {r["function_slug"] for r in runs} == set(apps)
    for run in runs:
        app = apps[run["function_slug"]]
        wait_until(
            lambda app=app, run=run: app.count(run["run_id"], "before") == 1,
            timeout=20,
            message=f"{run['function_slug']} step before the wait",
        )
    time.sleep(0.5)  # let the pauses be stored
    both.server.send("compat/approved", {"id": "both-1", "by": "carol"})
    for run in both.server.wait_runs(event_id, count=2):
        assert run["status"] == "Completed", run
        assert run["output"] == {"name": "compat/approved", "data": {"id": "both-1", "by": "carol"}}
