"""Protocol corners with the official Python SDK: streaming answers, use_api for large state,
integers beyond 2^53 in signed canonical bodies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, App, Server, start_py_app, start_server, sync_via_put

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module", params=["dev", "serve"])
def streaming_stack(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url, mode=request.param)
    app = None
    try:
        app = start_py_app(server, env={"PY_APP_STREAMING": "force"})
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def test_streaming_201_envelopes_are_unwrapped(streaming_stack: tuple[Server, App]) -> None:
    server, app = streaming_stack
    for event, expected in (("compat/three", {"a": 1, "b": 2, "c": "three", "echo": None}),):
        event_id = server.send(event)
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed", run
        assert run["output"] == expected
    event_id = server.send("compat/flaky", {"fail_times": 1})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed" and run["output"] == "ok after 2"
    event_id = server.send("compat/nonretriable")
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Failed"
    assert app.count(run["run_id"], "body") == 1


def test_large_state_goes_through_use_api(streaming_stack: tuple[Server, App]) -> None:
    server, app = streaming_stack
    event_id = server.send("compat/big", {"size": 2_500_000})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == [2_500_000, 2_500_000, 5_000_000]
    assert "use_api" in server.proc.log()
    for step in ("big1", "big2", "last"):
        assert app.count(run["run_id"], step) == 1, step
    # The SDK's own fetch path, with the server's auth rules.
    actions = server.get(f"/v0/runs/{run['run_id']}/actions")
    assert len(actions) == 3
    batch = server.get(f"/v0/runs/{run['run_id']}/batch")
    assert [e["name"] for e in batch] == ["compat/big"]


def test_integers_beyond_2_53_lose_precision_in_signed_bodies(streaming_stack: tuple[Server, App]) -> None:
    """Documented limitation: RFC 8785 canonical JSON carries numbers as IEEE doubles."""
    server, _ = streaming_stack
    big = 2**53 + 1
    event_id = server.send("compat/bigint", {"value": big})
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"]["seen_in_event"] == 2**53  # rounded to the nearest double
    assert run["output"]["seen_in_event"] != big
    # The stored event itself keeps the exact value.
    stored = server.get(f"/v1/events/{event_id}")["data"]
    assert stored["data"]["value"] == big
