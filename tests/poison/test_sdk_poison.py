"""The official Python SDK writing step outputs PostgreSQL cannot store (NaN from json.dumps of
float("nan"), a lone surrogate): the step fails once as UnstorableOutput, the SDK throws it into the
function, and the run fails with that error instead of the step being re-run forever. A healthy
run of the same function completes right after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, App, Server, start_py_app, start_server, sync_via_put
from tests.poison.test_executor_poison import HealthProbe


@pytest.fixture(scope="module")
def sdk_stack(module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url)
    app = start_py_app(server, app_id="py-poison")
    try:
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        yield server, app
    finally:
        app.proc.terminate()
        server.proc.terminate()


@pytest.mark.parametrize("kind", ["nan", "surrogate"])
def test_an_sdk_step_output_postgres_cannot_store_fails_the_run(sdk_stack: tuple[Server, App], kind: str) -> None:
    server, app = sdk_stack
    with HealthProbe(server.url) as probe:
        bad_event = server.send("compat/unstorable", {"kind": kind})
        good_event = server.send("compat/unstorable", {"kind": "ok"})
        [bad] = server.wait_runs(bad_event, timeout=30)
        [good] = server.wait_runs(good_event, timeout=15)
    probe.assert_responsive()
    assert good["status"] == "Completed" and good["output"] == "fine", good
    assert bad["status"] == "Failed", bad
    assert "UnstorableOutput" in str(bad["error"]), bad["error"]
    assert app.count(bad["run_id"], "produce") == 1  # the step ran once: its output is never retried
