"""Serverless timing without a long-lived process (issue: kicks lost, timers rounded up to the
one-minute schedule, steps longer than an invocation looping).

The handlers run in-process against a real database and real HTTP apps (the official Python SDK
app, or a scripted one); only the Lambda Invoke API is a loopback stand-in (`fake_aws`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pgqueue.protocol import signing
from tests.compat.conftest import (
    EVENT_KEY,
    PY_APP_FUNCTIONS,
    SIGNING_KEY,
    App,
    Server,
    start_py_app,
    start_server,
    sync_via_put,
)
from tests.serverless.conftest import FakeAws, LambdaContext, fixture
from tests.serverless.test_handlers import (
    CTX,
    app_body,
    function,
    http_v2,
    register_event,
    rows,
)


def test_a_kick_is_not_lost_when_the_kicked_executor_already_finished(
    lambda_env: dict[str, str], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event A is kicked, the executor finishes at once; event B half a second later used to be
    debounced away and wait for the next scheduled tick. Now a kick is skipped only while the
    last kicked executor has not finished looking."""
    monkeypatch.setenv("PGQUEUE_KICK_FUNCTION", "pgqueue-executor")
    monkeypatch.setenv("PGQUEUE_KICK_DEBOUNCE_MS", "60000")
    monkeypatch.setenv("PGQUEUE_INLINE_START", "0")  # the events wait for the executor's runner
    api = handlers("api_handler")
    executor = handlers("executor_handler")

    assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200  # A: kicked
    assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200  # executor not run yet
    assert len(fake_aws.invokes) == 1
    assert executor.handler(fixture("kick"), LambdaContext(remaining_ms=20_000))["idle"] is True
    assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200  # B: kicked again
    assert api.handler(fixture("rest_v1_send_event"), CTX)["statusCode"] == 200  # B's kick covers it
    assert [i["payload"] for i in fake_aws.invokes] == [{"action": "kick"}, {"action": "kick"}]
    result = executor.handler(fixture("kick"), LambdaContext(remaining_ms=20_000))
    assert result["events_seen"] == 4 and result["inbox"] == 0


@pytest.fixture
def sdk_stack(
    database_url: str, lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, App]]:
    """A `serve --no-workers` API and the official-SDK app: only executor invocations run work."""
    monkeypatch.setenv("PGQUEUE_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("PGQUEUE_EVENT_KEYS", EVENT_KEY)
    server = start_server(database_url, mode="serve", extra_args=("--no-workers",))
    app = None
    try:
        app = start_py_app(server)
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        yield server, app
    finally:
        if app is not None:
            app.proc.terminate()
        server.proc.terminate()


def test_a_five_second_sleep_resumes_in_time_within_one_invocation(
    sdk_stack: tuple[Server, App], handlers: Any
) -> None:
    """No scheduled tick: one kicked executor lingers for the sleep (PGQUEUE_TICK_LINGER_S is 60
    on Lambda) and finishes the run, instead of leaving it to the next one-minute tick."""
    server, app = sdk_stack
    executor = handlers("executor_handler")
    sent = time.time()
    event_id = server.send("compat/sleep", {"seconds": 5})
    result = executor.handler(fixture("kick"), LambdaContext(remaining_ms=30_000))
    [run] = server.runs_for(event_id)
    assert run["status"] == "Completed", (run, result)
    resumed = app.ledger()["ledger"][f"{run['run_id']}:after"][0]
    assert run["output"]["slept"] >= 5.0 and resumed - sent < 7.0
    assert result["idle"] is True and result["scheduled"] == 0


def test_an_executor_whose_budget_ends_first_hands_over(
    sdk_stack: tuple[Server, App], handlers: Any, fake_aws: FakeAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUE_KICK_FUNCTION", "pgqueue-executor:live")
    monkeypatch.setenv("PGQUEUE_WAKE_MAX_HOPS", "3")
    server, _ = sdk_stack
    executor = handlers("executor_handler")
    event_id = server.send("compat/sleep", {"seconds": 4})
    first = executor.handler(fixture("kick"), LambdaContext(remaining_ms=2_500))
    assert first["idle"] is False and first["handed_over"] is True, first
    # the alias the API kicks (its ':' URL-encoded in the Invoke path)
    assert fake_aws.invokes[-1] == {"function": "pgqueue-executor%3Alive", "invocation_type": "Event",
                                    "payload": {"action": "kick", "hop": 1}}
    second = executor.handler(fake_aws.invokes[-1]["payload"], LambdaContext(remaining_ms=30_000))
    assert second["hop"] == 1 and second["handed_over"] is False
    [run] = server.runs_for(event_id)
    assert run["status"] == "Completed", (run, first, second)
    # a chain stops after PGQUEUE_WAKE_MAX_HOPS hand-overs; the schedule starts the next one
    event_id = server.send("compat/sleep", {"seconds": 4})
    last = executor.handler({"action": "kick", "hop": 3}, LambdaContext(remaining_ms=2_500))
    assert last["idle"] is False and last["handed_over"] is False


def test_a_step_longer_than_the_invocation_fails_with_a_named_error(
    lambda_env: dict[str, str], handlers: Any, slow_app: str
) -> None:
    """A call still running at the invocation's deadline is an interruption; after five the run
    fails with CallTimedOut instead of being retried by every invocation for ever."""
    api = handlers("api_handler")
    executor = handlers("executor_handler")
    raw = app_body(slow_app, function("lambda-shop-slow", slow_app))
    assert api.handler(register_event(raw), CTX)["statusCode"] == 200
    assert api.handler(fixture("http_api_v2_send_event"), CTX)["statusCode"] == 200
    results = []
    for _ in range(8):
        results.append(executor.handler(fixture("kick"), LambdaContext(remaining_ms=2_000)))
        [run] = rows(lambda_env["DATABASE_URL"], "SELECT status::text, error FROM pgqueue.runs")
        if run["status"] == "failed":
            break
    assert run["status"] == "failed" and run["error"]["name"] == "CallTimedOut", (run, results)
    assert sum(r["items_released"] for r in results) == 5
    attempts = rows(lambda_env["DATABASE_URL"], "SELECT max(attempt) AS a FROM pgqueue.queue_items")
    assert attempts == [{"a": None}]  # the run ended: its items are gone


def test_state_too_large_for_a_lambda_response_fails_the_run_with_a_clear_error(
    sdk_stack: tuple[Server, App], handlers: Any
) -> None:
    """Two 3.5 MB step outputs: the next call's state (7 MB) no longer fits a request, so the SDK
    would fetch it from /v0/runs/{id}/actions — an answer AWS Lambda cannot return (6 MB). The
    run fails with StateTooLarge naming the limit, instead of the SDK failing on a 502 each try;
    the API answers the oversized route with a 413 that says why."""
    server, app = sdk_stack
    executor = handlers("executor_handler")
    api = handlers("api_handler")
    event_id = server.send("compat/big", {"size": 3_500_000})
    for _ in range(5):
        executor.handler(fixture("kick"), LambdaContext(remaining_ms=30_000))
        [run] = server.runs_for(event_id)
        if run["status"] not in ("Queued", "Running"):
            break
    assert run["status"] == "Failed", run
    assert run["error"]["name"] == "StateTooLarge" and "6 MB" in run["error"]["message"], run["error"]
    assert app.count(run["run_id"], "last") == 0
    headers = {"authorization": f"Bearer {signing.hashed_key(SIGNING_KEY)}"}
    response = api.handler(http_v2("GET", f"/v0/runs/{run['run_id']}/actions", headers=headers), CTX)
    assert response["statusCode"] == 413, response["statusCode"]
    assert "PGQUEUE_MAX_API_RESPONSE_BYTES" in json.loads(response["body"])["message"]
    assert len(json.dumps(response)) < 6_291_456
