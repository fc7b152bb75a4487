"""Issue 22, case 7 (first half): `POST /v1/checkpoint/{runId}/steps` writes a durable endpoint's
steps only for the request that holds the run, as `/async` does for a call (its `qi_id`). The
run's lease is in the `fn_id` that `POST /v1/checkpoint` answered, which the JS SDK sends back with
every later checkpoint; the signing key alone (every app of the server holds it, and the run id is
in the client's redirect) no longer lets anyone store a step or end someone else's run. Against
a real `pgqueue serve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.compat.conftest import Server
from tests.helpers.serve import rows
from tests.security.conftest import start_endpoint_run

DOMAIN = "http://app.test"


def _steps(server: Server, run_id: str, body: dict[str, Any]) -> httpx.Response:
    with server.client() as client:
        return client.post(f"/v1/checkpoint/{run_id}/steps", json={"run_id": run_id, **body})


def _stored(server: Server, run_id: str) -> dict[str, Any]:
    steps = rows(server.database_url, "SELECT step_id, memo FROM pgqueue.steps WHERE run_id = %s", (run_id,))
    [run] = rows(server.database_url, "SELECT status::text AS status, output FROM pgqueue.runs WHERE id = %s",
                 (run_id,))
    memos = {s["step_id"]: s["memo"] for s in steps}
    return {"steps": memos, "status": run["status"], "output": run["output"]}


def test_steps_need_the_lease_the_run_was_started_with(serve_factory: Callable[..., Server]) -> None:
    server = serve_factory()
    first = {"op": "StepRun", "id": "first", "name": "first", "data": 1}
    started = start_endpoint_run(server, DOMAIN, [first])
    run_id, fn_id, app_id = started["run_id"], started["fn_id"], started["app_id"]
    forged_step = {"op": "StepRun", "id": "forged", "name": "forged", "data": {"transfer_to": "mallory"}}
    forged_end = {"op": "RunComplete", "id": "complete",
                  "data": {"status": 200, "headers": {}, "body": "pwned"}}

    # With the signing key but without the lease: no fn_id, another function's id alone, or the
    # right function with a made-up lease.
    function_id = fn_id.split(".", 1)[0]
    made_up = f"{function_id}.1.00000000-0000-4000-8000-000000000000"
    for body, status in (({"app_id": app_id}, 400),
                         ({"fn_id": function_id, "app_id": app_id}, 400),
                         ({"fn_id": made_up, "app_id": app_id}, 409)):
        for op in (forged_step, forged_end):
            refused = _steps(server, run_id, {**body, "steps": [op]})
            assert refused.status_code == status, (body, op["op"], refused.text)
            assert refused.json()["status"] == status and refused.json()["error"]
    assert _stored(server, run_id) == {"steps": {"first": {"data": 1}}, "status": "running", "output": None}

    # The request that holds the run goes on as before: what the SDK sends back is what it was given.
    second = {"op": "StepRun", "id": "second", "name": "second", "data": 2}
    stored = _steps(server, run_id, {"fn_id": fn_id, "app_id": app_id, "steps": [second]})
    assert stored.status_code == 200, stored.text
    ended = _steps(server, run_id, {"fn_id": fn_id, "app_id": app_id, "steps": [
        {"op": "RunComplete", "id": "complete", "data": {"status": 200, "headers": {}, "body": "ok"}}]})
    assert ended.status_code == 200, ended.text
    after = _stored(server, run_id)
    assert after["steps"] == {"first": {"data": 1}, "second": {"data": 2}}
    assert after["status"] == "completed" and after["output"]["body"] == "ok"
