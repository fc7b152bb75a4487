"""Operations pgqueue performs for the official Python SDK (0.5.x), against the functions at the end
of tests/compat/apps/py_app.py, in dev, production and PgBouncer modes: step.ai.infer (AIGateway)
against an OpenAI-compatible stub on loopback, and group.parallel(parallel_mode=RACE).

The Python SDK has no step.fetch, waitForSignal or defer (docs/compatibility.md)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.compat import conftest, upstream_stub
from tests.compat.conftest import App, Server
from tests.compat.upstream_stub import Upstream
from tests.helpers.serve import rows

pytestmark = pytest.mark.compat
# The fixtures this module uses, by name.
py_stack = conftest.py_stack
upstream = upstream_stub.upstream


def _infer(server: Server, upstream: Upstream, prompt: str) -> dict[str, Any]:
    event_id = server.send("compat/ai", {"base_url": f"{upstream.url}/v1", "prompt": prompt})
    [run] = server.wait_runs(event_id, timeout=40)
    return run


def test_step_ai_infer_calls_the_model_for_the_app(py_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, _ = py_stack
    prompt = f"bonjour {uuid.uuid4().hex[:12]}"
    run = _infer(server, upstream, prompt)
    assert run["status"] == "Completed", run
    answer = run["output"]["answer"]
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == f"echo: {prompt}"
    assert answer["model"] == "stub-model"  # set by the SDK's adapter (on_call)
    [request] = [r for r in upstream.requests_to("/v1/chat/completions") if prompt in r["body"]]
    assert request["method"] == "POST"
    assert request["headers"]["authorization"] == "Bearer sk-py-test"
    assert json.loads(request["body"])["messages"] == [{"role": "user", "content": prompt}]


def test_step_ai_infer_failures_are_retried_then_raised(
    py_stack: tuple[Server, App], upstream: Upstream
) -> None:
    server, _ = py_stack
    recovered = _infer(server, upstream, f"fail-once:{uuid.uuid4().hex[:12]}")
    assert recovered["status"] == "Completed", recovered
    assert recovered["output"]["answer"]["attempt"] == 2
    run = _infer(server, upstream, "not-json")
    assert run["status"] == "Completed", run  # the function caught the step's error
    assert run["output"]["error"] == "AIGatewayError"
    assert "not JSON" in run["output"]["message"]


def test_group_parallel_race(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/race", {"slow_s": 2})
    [run] = server.wait_runs(event_id, timeout=40)
    assert run["status"] == "Completed", run
    # The Python SDK's group.parallel returns every result, whatever the mode.
    assert run["output"] == {"results": ["slow", "fast"], "after": "after"}
    for step in ("slow", "fast", "after-race"):
        assert app.count(run["run_id"], step) == 1, step
    attempts = rows(server.database_url,  # every call: attempts, and those recorded with their step or run
                    "SELECT step_id, outcome FROM pgqueue.calls WHERE run_id = %s ORDER BY started_at, seq",
                    (run["run_id"],))
    assert {a["outcome"] for a in attempts} == {"ok"}, attempts  # the re-planned slow step is no error
    # Race mode: a discovery call after each of the two steps (and the first and the last one).
    assert [a["step_id"] for a in attempts].count("step") == 4, attempts
