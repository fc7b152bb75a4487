"""Wire details the official JS SDK (`inngest` 4.24.0) relies on, with the SDK's own app
(tests/compat/js_app/wire.js), in dev, production and PgBouncer modes (issue #30, and #23's
step.metadata):

- every event reaches the SDK with `user` (`{}` when the sender gave none): middleware hooks see an
  object;
- event sessions: `ctx.sessions` round-trips from a sent event, is the intersection over a batch,
  propagates through step.sendEvent and step.invoke, and a manual `meta.sessions` overrides (or
  cuts, or clears) what a run propagates;
- a checkpointed function with parallel steps then more steps goes back to checkpointing once the
  parallel steps have drained and ends with its RunComplete checkpoint;
- metadata set from steps (step.metadata, inngest.metadata, step.score, group.experiment) is
  readable through the REST API; over 64 KB a step fails with the reason.

And the Python SDK (0.5.19) takes the same events: it has no `user` or `meta` on its Event model
and ignores both, so its runs are unaffected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat import js_fixtures
from tests.compat.conftest import (
    PY_APP_FUNCTIONS,
    STACK_MODES,
    App,
    Server,
    server_for_mode,
    start_py_app,
    sync_via_put,
)
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

WIRE_FUNCTIONS = 8
HOOKS = ("transformFunctionInput", "onMemoizationEnd", "onRunStart", "onStepStart", "onStepComplete",
         "onRunComplete")


@pytest.fixture(scope="module", params=STACK_MODES)
def wire(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    js_fixtures.ensure_js_app_installed()
    server = server_for_mode(request, module_database_url, request.param)
    app = None
    try:
        app = js_fixtures.start_js_app(server, app_id="js-wire", script="wire.js")
        sync_via_put(app, server, expect_functions=WIRE_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def _one_run(server: Server, event_id: str, timeout: float = 30) -> dict[str, Any]:
    [run] = server.wait_runs(event_id, timeout=timeout)
    assert run["status"] == "Completed", run
    return run


def _sdk_send(app: App, events: Any) -> list[str]:
    """Send through the SDK's own client (inngest.send), which normalises `meta` as users' apps do."""
    r = httpx.post(app.base + "/send", json=events, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


def _sessions(app: App, tag: str, timeout: float = 30) -> Any:
    """ctx.sessions of the run that recorded `tag` (None: the SDK set none)."""
    ledger = wait_until(lambda: tag in app.ledger()["sessions"] and app.ledger(), timeout=timeout,
                        message=f"a run recording sessions under {tag!r}")
    return ledger["sessions"][tag]


# -- 1. event.user ----------------------------------------------------------------------------------


def test_middleware_hooks_see_event_user_as_an_object(wire: tuple[Server, App]) -> None:
    server, app = wire
    run = _one_run(server, server.send("wire/user"))
    assert run["output"] == {"has_user": True, "user": {}}
    seen = app.ledger()["seen"][run["run_id"]]
    assert set(seen) == set(HOOKS)
    assert all(hook == {"has_user": True, "user": {}} for hook in seen.values()), seen

    given = _one_run(server, server.send("wire/user", user={"id": "u-7"}))
    assert given["output"] == {"has_user": True, "user": {"id": "u-7"}}


# -- 2. sessions ------------------------------------------------------------------------------------


def test_sessions_round_trip_from_an_event_sent_by_the_sdk(wire: tuple[Server, App]) -> None:
    server, app = wire
    tag = f"echo-{uuid.uuid4().hex[:8]}"
    [event_id] = _sdk_send(app, {"name": "wire/sessions", "data": {"tag": tag},
                                 "meta": {"sessions": {"conversation": "c-1", "user": 42}}})
    run = _one_run(server, event_id)
    expected = {"conversation": "c-1", "user": "42"}  # the SDK sends ids as strings
    assert run["output"] == {"sessions": expected, "meta": {"sessions": expected}}
    assert server.get(f"/v1/events/{event_id}")["data"]["sessions"] == expected
    # An event without sessions: the SDK sets none.
    plain = _one_run(server, server.send("wire/sessions", {"tag": f"{tag}-plain"}))
    assert plain["output"] == {"sessions": None, "meta": None}


def test_a_batch_run_sees_the_sessions_its_events_share(wire: tuple[Server, App]) -> None:
    server, app = wire
    batch = f"batch-{uuid.uuid4().hex[:8]}"
    first = {"name": "wire/sessions.batch", "data": {"batch": batch},
             "meta": {"sessions": {"user": "alice", "conversation": "chat-1", "request": "first-only"}}}
    second = {"name": "wire/sessions.batch", "data": {"batch": batch},
              "meta": {"sessions": {"user": "alice", "conversation": "chat-2"}}}
    ids = _sdk_send(app, [first, second])
    run = _one_run(server, ids[0])
    assert run["output"] == {"sessions": {"user": "alice"}, "count": 2}
    assert _sessions(app, batch) == {"user": "alice"}
    # What the batch sends inherits the intersection.
    assert _sessions(app, f"{batch}:child") == {"user": "alice"}

    lonely = f"batch-{uuid.uuid4().hex[:8]}"
    _sdk_send(app, [{**first, "data": {"batch": lonely}},
                    {"name": "wire/sessions.batch", "data": {"batch": lonely}}])
    assert _sessions(app, lonely) is None  # an event without sessions: nothing is shared


def test_sessions_propagate_through_send_event_and_invoke(wire: tuple[Server, App]) -> None:
    server, app = wire
    tag = f"parent-{uuid.uuid4().hex[:8]}"
    parent_sessions = {"conversation": "chat-1", "user": "alice"}
    event_id = server.send("wire/sessions.parent", {"tag": tag}, meta={"sessions": parent_sessions})
    run = _one_run(server, event_id)
    assert run["output"] == {"parent": parent_sessions, "invoked": parent_sessions}
    assert _sessions(app, f"{tag}:sent") == parent_sessions
    assert _sessions(app, f"{tag}:invoked") == parent_sessions


@pytest.mark.parametrize(("override", "children"), [
    ({"conversation": "chat-2"}, {"conversation": "chat-2", "user": "alice"}),  # manual wins on its key
    ({"conversation": None}, {"user": "alice"}),  # a null cuts the inherited key
    (None, None),  # a whole-field null clears every inherited session
    ({}, {"conversation": "chat-1", "user": "alice"}),  # empty overrides: inherit
], ids=["replace", "cut", "clear", "inherit"])
def test_a_manual_session_overrides_a_propagated_one(
    wire: tuple[Server, App], override: Any, children: Any,
) -> None:
    server, app = wire
    tag = f"override-{uuid.uuid4().hex[:8]}"
    parent_sessions = {"conversation": "chat-1", "user": "alice"}
    run = _one_run(server, server.send("wire/sessions.parent", {"tag": tag, "override": override},
                                       meta={"sessions": parent_sessions}))
    assert run["output"]["parent"] == parent_sessions
    assert _sessions(app, f"{tag}:sent") == children
    assert _sessions(app, f"{tag}:invoked") == children


def test_bad_sessions_are_refused_with_the_reason(wire: tuple[Server, App]) -> None:
    server, _ = wire
    with server.client() as c:
        r = c.post(f"/e/{server.event_key}",
                   json={"name": "wire/sessions", "meta": {"sessions": {k: "1" for k in "abcdef"}}})
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "event 0: an event carries at most 5 sessions (meta.sessions has 6)",
                        "status": 400}


# -- 3. checkpointing after parallel steps ----------------------------------------------------------


def test_checkpointing_resumes_after_parallel_steps_and_ends_with_run_complete(
    wire: tuple[Server, App],
) -> None:
    server, app = wire
    run = _one_run(server, server.send("wire/parallel"))
    assert run["output"] == "done"
    jobs = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    assert sorted(j["name"] for j in jobs) == sorted(
        ["seq-1", "seq-2", "par-1", "par-2", "after-1", "after-2", "after-3"])
    calls = app.ledger()["calls"][run["run_id"]]
    ops = [op for call in calls for op in call["ops"]]
    # The SDK's own assertions: no StepPlanned for the steps after the parallel ones, and the call
    # that ends the run (its RunComplete) was not told to plan steps.
    assert not [op for op in ops if op.startswith("StepPlanned:after-")], calls
    [final] = [call for call in calls if any(op.startswith("RunComplete") for op in call["ops"])]
    assert final["die"] is False and final["step_id"] == "step", calls
    # seq-1, seq-2 checkpointed and the two parallel steps planned; one call per parallel step; the
    # after-steps checkpointed and the RunComplete in the last call.
    assert len(calls) == 4, calls
    assert [call["die"] for call in calls] == [False, True, True, False], calls


# -- 4. metadata ------------------------------------------------------------------------------------


def test_metadata_set_from_steps_is_readable_through_the_api(wire: tuple[Server, App]) -> None:
    server, _ = wire
    run = _one_run(server, server.send("wire/metadata"), timeout=60)
    run_id = run["run_id"]
    assert run["output"] == {"variant": "fresh", "result": "fresh"}

    entries = server.get(f"/v1/runs/{run_id}/metadata")["data"]
    by_kind = {(e["scope"], e["kind"]): e for e in entries}
    # step.metadata("md").set(values, "md"): the op's metadata, on the run
    assert by_kind[("run", "userland.md")]["values"] == {"source": "step.metadata", "n": 1}
    # inngest.metadata.set() outside a step: the REST API, on the run
    assert by_kind[("run", "userland.default")]["values"] == {"outside": True}
    # step.score(): inngest.score, merged on the run
    assert by_kind[("run", "inngest.score")]["values"] == {"accuracy": {"value": 0.75}}
    # inngest.metadata.set() inside step "work", and .step("work") from another step (REST API)
    jobs = {j["name"]: j for j in server.get(f"/v1/runs/{run_id}/jobs")["data"]}
    work = {e["kind"]: e["values"] for e in jobs["work"]["metadata"]}
    assert work == {"userland.default": {"inside": True, "at": "work"},
                    "userland.aimed": {"aimed": "from another step"}}
    # group.experiment: the variant chosen, on the experiment's selection step
    [experiment] = jobs["exp"]["metadata"]
    assert experiment["kind"] == "inngest.experiment"
    assert experiment["values"] == {"name": "exp", "variant": "fresh", "selection_strategy": "fixed",
                                    "available_variants": ["control", "fresh"]}
    # GET /v1/runs/{id} carries the run's own metadata
    run_kinds = {e["kind"] for e in server.get(f"/v1/runs/{run_id}")["data"]["metadata"]}
    assert run_kinds == {"userland.md", "userland.default", "inngest.score"}


@pytest.mark.parametrize("via", ["op", "api"])
def test_metadata_over_64_kb_fails_the_step_with_the_reason(wire: tuple[Server, App], via: str) -> None:
    server, _ = wire
    run = _one_run(server, server.send("wire/metadata.big", {"via": via}), timeout=60)
    output = run["output"]
    assert output["failed"] is True, output
    assert "64 KB" in output["message"], output
    if via == "op":  # pgqueue failed the step that carried it, with a named error
        assert output["name"] == "MetadataTooLarge", output
    else:  # the SDK's own error for a 413 from the API
        assert "Failed to update metadata" in output["message"], output
    assert server.get(f"/v1/runs/{run['run_id']}/metadata")["data"] == []  # nothing half-stored


def test_the_metadata_api_answers_in_inngests_shapes(wire: tuple[Server, App]) -> None:
    server, _ = wire
    run = _one_run(server, server.send("wire/user"))
    run_id = run["run_id"]
    url = f"/v1/runs/{run_id}/metadata"
    with server.client() as c:
        ok = c.post(url, json={"target": {"run_id": run_id},
                               "metadata": [{"kind": "userland.n", "op": "add", "values": {"n": 2}}]})
        assert ok.status_code == 200, ok.text
        again = c.post(url, json={"target": {"run_id": run_id},
                                  "metadata": [{"kind": "userland.n", "op": "add", "values": {"n": 3}}]})
        assert again.status_code == 200, again.text
        cases = [
            ({"target": {"step_attempt": 1}, "metadata": [{"kind": "userland.x", "op": "set", "values": {}}]},
             400, "target.step_id must be defined if target.step_attempt is defined"),
            ({"target": {}, "metadata": [{"kind": "inngest.secret", "op": "set", "values": {}}]}, 400,
             "reserved"),
            ({"target": {}, "metadata": [{"kind": "userland.x", "op": "upsert", "values": {}}]}, 400, "`op`"),
            ({"target": {}, "metadata": [{"kind": "userland.x", "op": "set", "values": {"b": "x" * 70_000}}]},
             413, "64 KB"),
        ]
        for body, status, fragment in cases:
            r = c.post(url, json=body)
            assert r.status_code == status, r.text
            assert r.json()["status"] == status and fragment in r.json()["error"], r.text
        missing = c.post(f"/v1/runs/{'0' * 26}/metadata", json={"metadata": [
            {"kind": "userland.x", "op": "set", "values": {}}]})
        assert missing.status_code == 404, missing.text
    [entry] = [e for e in server.get(url)["data"] if e["kind"] == "userland.n"]
    assert entry["values"] == {"n": 5}


# -- the Python SDK ---------------------------------------------------------------------------------


def test_the_python_sdk_takes_events_with_user_and_meta(wire: tuple[Server, App]) -> None:
    server, _ = wire
    app = start_py_app(server, app_id="py-wire")
    try:
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        event_id = server.send("compat/three", {"echo": "hi"}, user={"id": "u-1"},
                               meta={"sessions": {"conversation": "c-1"}})
        run = _one_run(server, event_id)
        assert run["output"] == {"a": 1, "b": 2, "c": "three", "echo": "hi"}
    finally:
        app.proc.terminate()
