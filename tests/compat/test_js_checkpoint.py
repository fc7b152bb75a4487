"""Checkpointing with the official JS SDK (`inngest` 4.24.0): a call carries ctx.fn_id and ctx.qi_id,
so the SDK runs the function's steps back to back in one request and stores each one with
`POST /v1/checkpoint/{runId}/async` (tests/compat/js_app/checkpoint.js), in dev, production and
PgBouncer modes.

What is checked: a 3-step function takes exactly one app request; a sleep between steps ends the
request after the steps before it were stored; a failing step is retried as usual; a crash of the
app after a checkpoint does not run the checkpointed step again; a checkpoint from a call that no
longer holds its queue item is refused (409) and stores nothing; PGQUEUE_CHECKPOINTING=0 goes back
to one step per request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.compat import js_fixtures
from tests.compat.conftest import STACK_MODES, App, Server, server_for_mode, sync_via_put
from tests.helpers.procs import free_port, wait_until

pytestmark = pytest.mark.compat

CHECKPOINT_FUNCTIONS = 5


@dataclass
class Stack:
    server: Server
    app: App
    port: int
    env: dict[str, str]

    def restart_app(self) -> None:
        """Start the app again on the same port (the URL pgqueue has synced)."""
        self.app.proc.terminate()
        self.app = js_fixtures.start_js_app(self.server, app_id="js-checkpoint", script="checkpoint.js",
                                            port=self.port, env=self.env)

    def requests(self, run_id: str) -> int:
        return int(self.app.ledger()["requests"].get(run_id, 0))

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.server.database_url, autocommit=True, row_factory=dict_row,
                             prepare_threshold=None) as conn:
            return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=STACK_MODES)
def stack(request: pytest.FixtureRequest, module_database_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    js_fixtures.ensure_js_app_installed()
    folder = tmp_path_factory.mktemp(f"checkpoint-{request.param}")
    env = {"SIDE_EFFECTS_FILE": str(folder / "side-effects"), "CRASH_MARKER": str(folder / "crashed")}
    server = server_for_mode(request, module_database_url, request.param)
    port = free_port()
    app = None
    try:
        app = js_fixtures.start_js_app(server, app_id="js-checkpoint", script="checkpoint.js", port=port,
                                       env=env)
        sync_via_put(app, server, expect_functions=CHECKPOINT_FUNCTIONS)
        s = Stack(server, app, port, env)
        yield s
        app = s.app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def _jobs(server: Server, run_id: str) -> list[dict[str, Any]]:
    return list(server.get(f"/v1/runs/{run_id}/jobs")["data"])


def test_three_steps_run_in_one_request(stack: Stack) -> None:
    server, app = stack.server, stack.app
    event_id = server.send("ckpt/three", {"echo": "hi"})
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"a": 1, "b": {"two": 2}, "c": "three", "echo": "hi"}
    for step in ("a", "b", "c"):
        assert app.count(run["run_id"], step) == 1, step
    assert stack.requests(run["run_id"]) == 1
    jobs = _jobs(server, run["run_id"])
    assert [(j["name"], j["output"]) for j in jobs] == [("a", 1), ("b", {"two": 2}), ("c", "three")]


def test_a_sleep_ends_the_request_after_the_steps_before_it(stack: Stack) -> None:
    server, app = stack.server, stack.app
    event_id = server.send("ckpt/sleepy")
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] == ["A", "B", "C"]
    for step in ("a", "b", "c"):
        assert app.count(run["run_id"], step) == 1, step
    # a and b (checkpointed) then the sleep in the first request; c and the return value in the second
    assert stack.requests(run["run_id"]) == 2
    assert [j["name"] for j in _jobs(server, run["run_id"])] == ["a", "b", "nap", "c"]


def test_a_failing_step_is_retried(stack: Stack) -> None:
    server, app = stack.server, stack.app
    event_id = server.send("ckpt/flaky")
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == ["A", "B after 2", "C"]
    assert [app.count(run["run_id"], s) for s in ("a", "b", "c")] == [1, 2, 1]


def test_a_crash_after_a_checkpoint_does_not_run_the_stored_step_again(stack: Stack) -> None:
    server = stack.server
    marker = Path(stack.env["CRASH_MARKER"])
    side_effects = Path(stack.env["SIDE_EFFECTS_FILE"])
    event_id = server.send("ckpt/crashy")
    run_id = wait_until(lambda: marker.exists() and marker.read_text(), timeout=30, message="the crash")
    stack.app.proc.popen.wait(timeout=10)  # the app killed itself in step b, after a was checkpointed
    assert [r["step_id"] for r in stack.query(
        "SELECT s.step_id FROM pgqueue.steps s WHERE s.run_id = %s", run_id)], "step a was not stored"
    stack.restart_app()
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == ["A", "B", "C"]
    # The first call ran a (stored by its checkpoint) and died in b; the retry ran b, then c.
    attempts = stack.query("SELECT attempt, outcome FROM pgqueue.attempts WHERE run_id = %s ORDER BY id",
                           run_id)
    assert (attempts[0]["attempt"], attempts[0]["outcome"]) == (0, "retry"), attempts
    lines = [line for line in side_effects.read_text().splitlines() if line.startswith(run_id)]
    assert {step: lines.count(f"{run_id}:{step}") for step in ("a", "b", "c")} == {"a": 1, "b": 2, "c": 1}


def _checkpoint(server: Server, run_id: str, qi_id: str, steps: list[dict[str, Any]],
                **extra: Any) -> httpx.Response:
    body = {"run_id": run_id, "fn_id": extra.pop("fn_id", None), "qi_id": qi_id, "steps": steps, "ts": 0,
            **extra}
    with server.client() as c:
        return c.post(f"/v1/checkpoint/{run_id}/async", json=body)


def _fake_step(step_id: str) -> dict[str, Any]:
    return {"op": "StepRun", "id": step_id, "name": "api-step", "displayName": "api-step", "data": {"x": 1}}


def test_only_the_call_holding_the_item_may_checkpoint(stack: Stack) -> None:
    server = stack.server
    event_id = server.send("ckpt/slow", {"seconds": 4})
    [running] = server.wait_runs(event_id, terminal=False)
    run_id = running["run_id"]

    def leased() -> dict[str, Any] | None:
        """The item of the call running step b (4 s): leased once step a is stored."""
        rows = stack.query("SELECT q.id, q.lease_token, q.function_id FROM pgqueue.queue_items q"
                           " WHERE q.run_id = %s AND q.state = 'leased'"
                           " AND EXISTS (SELECT 1 FROM pgqueue.steps s WHERE s.run_id = q.run_id)", run_id)
        return rows[0] if rows else None

    item = wait_until(leased, timeout=20, message="the leased item of the call running step b")
    fn_id = str(item["function_id"])
    good = f"{item['id']}.{item['lease_token']}"

    def stored(step_id: str) -> int:
        return len(stack.query("SELECT 1 FROM pgqueue.steps WHERE run_id = %s AND step_id = %s",
                               run_id, step_id))

    # Another lease token (a superseded call): 409, nothing stored.
    r = _checkpoint(server, run_id, f"{item['id']}.{uuid.uuid4()}", [_fake_step("stale")], fn_id=fn_id)
    assert r.status_code == 409, r.text
    assert "no longer holds" in r.json()["error"]
    assert stored("stale") == 0
    # Malformed requests: 400 with the reason.
    for qi_id, steps, message in (
        ("not-a-ref", [_fake_step("x")], "qi_id"),
        (good, [{"op": "Sleep", "id": "x", "name": "1s"}], "StepRun"),
        (good, "nope", "steps"),
    ):
        r = _checkpoint(server, run_id, qi_id, steps, fn_id=fn_id)  # type: ignore[arg-type]
        assert r.status_code == 400, r.text
        assert message in r.json()["error"], r.text
    r = _checkpoint(server, run_id, good, [_fake_step("x")], fn_id=str(uuid.uuid4()))
    assert r.status_code == 400 and "fn_id" in r.json()["error"], r.text
    # The call's own reference: stored once, however often it is sent.
    for _ in range(2):
        r = _checkpoint(server, run_id, good, [_fake_step("api-step")], fn_id=fn_id)
        assert r.status_code == 200, r.text
    assert stored("api-step") == 1

    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] == ["A", "B"]
    # The run has ended: the same reference is stale now.
    r = _checkpoint(server, run_id, good, [_fake_step("late")], fn_id=fn_id)
    assert r.status_code == 409, r.text
    assert stored("late") == 0
    if server.mode == "serve":
        r = httpx.post(f"{server.url}/v1/checkpoint/{run_id}/async", timeout=10,
                       json={"run_id": run_id, "qi_id": good, "steps": []})
        assert r.status_code == 401, r.text


def test_checkpointing_can_be_turned_off(server_factory: Callable[..., Server]) -> None:
    server = server_factory("dev", env={"PGQUEUE_CHECKPOINTING": "0"})
    app = js_fixtures.start_js_app(server, app_id="js-checkpoint", script="checkpoint.js")
    try:
        sync_via_put(app, server, expect_functions=CHECKPOINT_FUNCTIONS)
        event_id = server.send("ckpt/three")
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed", run
        assert run["output"]["c"] == "three"
        requests = int(app.ledger()["requests"][run["run_id"]])
        assert requests == 4  # one per step, and one for the return value
    finally:
        app.proc.terminate()
