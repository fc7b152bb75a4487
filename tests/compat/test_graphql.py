"""GraphQL at /v0/gql against real runs of the official Python and JS SDK apps, on `pgqueue dev` and
`pgqueue serve`: the queries inngest-py's own integration helpers send (tests/compat/gql_client.py,
verbatim) for runs of every shape, the trace's spans as Inngest's dev server shapes them, the same
trace over REST, and the mutations."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.compat.conftest import (
    PY_APP_FUNCTIONS,
    App,
    Server,
    sdk_env,
    start_py_app,
    start_server,
    sync_via_put,
)
from tests.compat.gql_client import Client, GqlError
from tests.compat.js_fixtures import JS_FUNCTION_COUNT, ensure_js_app_installed, start_js_app
from tests.conftest import create_database, drop_database
from tests.helpers.procs import free_port, start_process, wait_http, wait_until

pytestmark = pytest.mark.compat

FLOW_FUNCTIONS = 8

SPAN_FIELDS = """
    name status spanID outputID attempts duration queuedAt startedAt endedAt stepOp stepID stepType isRoot
    parentSpanID
    stepInfo {
      __typename
      ... on SleepStepInfo { sleepUntil }
      ... on WaitForEventStepInfo { eventName expression timeout foundEventID timedOut }
      ... on InvokeStepInfo { triggeringEventID functionID runID timedOut }
    }
"""
TRACE = """
query Trace($runID: String!) {
  run(runID: $runID) {
    id status output sourceID triggerIDs eventName isBatch queuedAt startedAt endedAt
    function { slug name } app { name }
    trace { %s childrenSpans { %s childrenSpans { %s } } }
  }
}
""".replace("%s", SPAN_FIELDS)
OUTPUT = "query O($id: String!) { runTraceSpanOutputByID(outputID: $id) { data error { message name } } }"


@pytest.fixture(scope="module", params=["py-dev", "py-serve", "py-pgbouncer", "js-dev", "js-serve"])
def stack(
    request: pytest.FixtureRequest, pg_admin_url: str, template_db: str
) -> Iterator[tuple[Server, App, str]]:
    """A server and an SDK app per SDK and mode, each on a database of its own (so one stack's
    functions never answer another's events). `pgbouncer`: dev mode through PgBouncer in
    transaction mode (the trace's snapshot transaction, no prepared statements)."""
    sdk, mode = request.param.split("-")
    if sdk == "js":
        ensure_js_app_installed()
    database_url = create_database(pg_admin_url, template_db)
    if mode == "pgbouncer":
        bouncer = request.getfixturevalue("pgbouncer")
        server = start_server(bouncer.url_for(database_url), mode="dev", env={"PGQUEUE_POOLER": "1"})
    else:
        server = start_server(database_url, mode=mode)
    app = None
    try:
        if sdk == "py":
            app = start_py_app(server)
            sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        else:
            app = start_js_app(server)
            sync_via_put(app, server, expect_functions=JS_FUNCTION_COUNT)
        yield server, app, sdk
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()
        drop_database(pg_admin_url, database_url)


def gql(server: Server) -> Client:
    return Client(server)


def trace_of(server: Server, run_id: str) -> dict[str, Any]:
    return gql(server).query(TRACE, {"runID": run_id})["run"]


def span(parent: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in parent["childrenSpans"] if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in parent["childrenSpans"]])
    return found[0]


def step_output(server: Server, run_id: str, step: str) -> Any:
    return json.loads(gql(server).get_step_output(run_id=run_id, step_id=step))


def run_for(server: Server, event_id: str, status: str, *, timeout: float = 60) -> tuple[str, Any]:
    client = gql(server)
    [run_id] = client.get_run_ids_from_event_id(event_id, run_count=1, timeout=30)
    run = client.wait_for_run_status(run_id, status, timeout=timeout)
    return run_id, run


def test_steps_as_inngest_s_helpers_read_them(stack: tuple[Server, App, str]) -> None:
    server, app, _ = stack
    event_id = server.send("compat/three", {"echo": "hi"})
    run_id, run = run_for(server, event_id, "COMPLETED")

    assert json.loads(run.output) == {"a": 1, "b": 2, "c": "three", "echo": "hi"}
    assert run.event.name == "compat/three" and run.event.data == {"echo": "hi"}
    assert step_output(server, run_id, "a") == {"data": 1}
    assert step_output(server, run_id, "b") == {"data": 2}
    assert step_output(server, run_id, "c") == {"data": "three"}

    got = trace_of(server, run_id)
    assert got["status"] == "COMPLETED" and got["eventName"] == "compat/three"
    assert got["triggerIDs"] == [event_id]
    assert got["function"]["slug"] == f"{app.app_id}-three-steps" and got["app"]["name"] == app.app_id
    root = got["trace"]
    assert root["name"] == "Run" and root["isRoot"] and root["status"] == "COMPLETED"
    names = [s["name"] for s in root["childrenSpans"]]
    assert names[0] == "Queued" and names[-1] == "Finalization"
    assert [n for n in names if n in ("a", "b", "c")] == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        s = span(root, name)
        assert (s["status"], s["stepOp"], s["stepType"]) == ("COMPLETED", "RUN", "RUN")
        assert s["childrenSpans"] == []
        assert s["parentSpanID"] == root["spanID"] and s["stepID"] and s["duration"] is not None
        assert s["queuedAt"] <= s["startedAt"] <= s["endedAt"]
    assert span(root, "Queued")["endedAt"] <= span(root, "a")["startedAt"]
    # the root's output and the finalization's are the run's result
    out = gql(server).query(OUTPUT, {"id": root["outputID"]})["runTraceSpanOutputByID"]
    assert json.loads(out["data"]) == {"a": 1, "b": 2, "c": "three", "echo": "hi"} and out["error"] is None


def test_the_rest_trace_is_the_same_tree(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    run_id, _ = run_for(server, server.send("compat/parallel"), "COMPLETED")
    rest = server.get(f"/v1/runs/{run_id}/trace")["data"]["root"]
    root = trace_of(server, run_id)["trace"]

    def shape(s: dict[str, Any], keys: tuple[str, ...]) -> Any:
        return ([s[k] for k in keys], [shape(c, keys) for c in s.get("childrenSpans", s.get("children", []))])

    assert shape(root, ("spanID", "name", "status", "outputID")) == \
        shape(rest, ("span_id", "name", "status", "output_id"))
    output = server.get(f"/v1/runs/{run_id}/outputs/{span(root, 'left')['outputID']}")["data"]
    assert output == {"data": '"L"', "error": None, "input": None}


def test_parallel_steps_side_by_side(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    run_id, run = run_for(server, server.send("compat/parallel"), "COMPLETED")
    assert json.loads(run.output) == ["L", "R", "done"]
    root = trace_of(server, run_id)["trace"]
    left, right, after = span(root, "left"), span(root, "right"), span(root, "after")
    # planned by one call, each run as a call of its own, both before `after`
    assert left["queuedAt"] == right["queuedAt"]
    assert left["spanID"] != right["spanID"]
    assert left["parentSpanID"] == right["parentSpanID"] == root["spanID"]
    assert max(left["endedAt"], right["endedAt"]) <= after["startedAt"]
    assert step_output(server, run_id, "left") == {"data": "L"}
    assert step_output(server, run_id, "right") == {"data": "R"}


def test_sleep_is_a_waiting_span_then_a_completed_one(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    client = gql(server)
    [run_id] = client.get_run_ids_from_event_id(server.send("compat/sleep", {"seconds": 3}), run_count=1)

    def sleeping() -> dict[str, Any] | None:
        root = trace_of(server, run_id)["trace"]
        naps = [s for s in root["childrenSpans"] if s["name"] == "nap"]
        return naps[0] if naps else None

    nap = wait_until(sleeping, timeout=20, message="the sleep span")
    assert (nap["status"], nap["stepOp"], nap["endedAt"], nap["outputID"]) == ("WAITING", "SLEEP", None, None)
    assert nap["stepInfo"]["__typename"] == "SleepStepInfo"
    assert nap["stepInfo"]["sleepUntil"] > nap["startedAt"]
    assert client.query(TRACE, {"runID": run_id})["run"]["status"] == "RUNNING"

    client.wait_for_run_status(run_id, "COMPLETED", timeout=30)
    nap = span(trace_of(server, run_id)["trace"], "nap")
    assert nap["status"] == "COMPLETED" and nap["duration"] >= 2500


def test_wait_for_event_waits_then_holds_the_event(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    client = gql(server)
    key = f"w-{time.time_ns()}"
    [run_id] = client.get_run_ids_from_event_id(server.send("compat/wait", {"id": key}), run_count=1)

    def waiting() -> dict[str, Any] | None:
        spans = [s for s in trace_of(server, run_id)["trace"]["childrenSpans"] if s["name"] == "approval"]
        return spans[0] if spans else None

    approval = wait_until(waiting, timeout=20, message="the wait span")
    assert (approval["status"], approval["stepOp"]) == ("WAITING", "WAIT_FOR_EVENT")
    info = approval["stepInfo"]
    assert info["__typename"] == "WaitForEventStepInfo" and info["eventName"] == "compat/approved"
    assert info["timeout"] > approval["startedAt"] and info["timedOut"] is None and info["expression"]

    sent = server.send("compat/approved", {"id": key, "amount": 50})
    run = client.wait_for_run_status(run_id, "COMPLETED")
    assert json.loads(run.output) == {"name": "compat/approved", "data": {"id": key, "amount": 50}}
    approval = span(trace_of(server, run_id)["trace"], "approval")
    assert approval["status"] == "COMPLETED"
    assert (approval["stepInfo"]["foundEventID"], approval["stepInfo"]["timedOut"]) == (sent, False)
    got = step_output(server, run_id, "approval")
    assert got["data"]["name"] == "compat/approved" and got["data"]["data"] == {"id": key, "amount": 50}


def test_invoke_names_the_run_it_started(stack: tuple[Server, App, str]) -> None:
    server, app, _ = stack
    run_id, run = run_for(server, server.send("compat/invoke", {"n": 3}), "COMPLETED")
    assert json.loads(run.output) == {"result": {"doubled": 6, "invoked_by": "inngest/function.invoked"}}
    call = span(trace_of(server, run_id)["trace"], "call-child")
    assert (call["status"], call["stepOp"]) == ("COMPLETED", "INVOKE")
    info = call["stepInfo"]
    assert info["__typename"] == "InvokeStepInfo" and info["functionID"] == f"{app.app_id}-child"
    assert info["timedOut"] is False
    child = trace_of(server, info["runID"])
    assert child["status"] == "COMPLETED" and child["sourceID"] == run_id
    assert child["triggerIDs"] == [info["triggeringEventID"]]
    assert step_output(server, run_id, "call-child") == {"data": {"doubled": 6,
                                                                   "invoked_by": "inngest/function.invoked"}}


def test_retries_are_attempts_with_their_errors(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    run_id, run = run_for(server, server.send("compat/flaky", {"fail_times": 2}), "COMPLETED")
    assert json.loads(run.output) == "ok after 3"
    unstable = span(trace_of(server, run_id)["trace"], "unstable")
    assert (unstable["status"], unstable["attempts"]) == ("COMPLETED", 2)
    attempts = unstable["childrenSpans"]
    assert [(a["name"], a["status"]) for a in attempts] == [
        ("Attempt 0", "FAILED"), ("Attempt 1", "FAILED"), ("Attempt 2", "COMPLETED")]
    assert attempts[0]["endedAt"] <= attempts[1]["queuedAt"] <= attempts[1]["startedAt"]
    for n in (0, 1):
        out = gql(server).query(OUTPUT, {"id": attempts[n]["outputID"]})["runTraceSpanOutputByID"]
        assert out["data"] is None and out["error"]["message"] == f"failure {n + 1} of 2", out
    assert step_output(server, run_id, "unstable") == {"data": "ok after 3"}


def test_failure_keeps_the_error_of_the_step_and_the_run(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    run_id, run = run_for(server, server.send("compat/fail"), "FAILED")
    assert json.loads(run.output)["message"] == "boom"
    got = step_output(server, run_id, "boom")
    assert got["data"] is None and got["error"]["message"] == "boom" and got["error"]["name"]
    assert isinstance(got["error"]["stack"], str) and "boom" in got["error"]["stack"]
    root = trace_of(server, run_id)["trace"]
    assert root["status"] == "FAILED"
    boom = span(root, "boom")
    assert boom["status"] == "FAILED" and [a["status"] for a in boom["childrenSpans"]] == ["FAILED", "FAILED"]
    final = span(root, "Finalization")
    assert final["status"] == "FAILED" and final["stepType"] == "FINALIZATION"


def test_cancel_run_mutation(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    client = gql(server)
    [run_id] = client.get_run_ids_from_event_id(
        server.send("compat/cancellable", {"id": f"c-{time.time_ns()}", "sleep": 60}), run_count=1)
    wait_until(lambda: any(s["name"] == "nap" for s in trace_of(server, run_id)["trace"]["childrenSpans"]),
               timeout=20, message="the run sleeping")

    cancelled = client.query("mutation C($id: ULID!) { cancelRun(runID: $id) { id status finishedAt } }",
                             {"id": run_id})["cancelRun"]
    assert (cancelled["id"], cancelled["status"]) == (run_id, "CANCELLED") and cancelled["finishedAt"]
    with pytest.raises(GqlError, match="run ended with a different status: CANCELLED"):
        client.wait_for_run_status(run_id, "COMPLETED", timeout=5)
    root = trace_of(server, run_id)["trace"]
    assert root["status"] == "CANCELLED" and span(root, "first")["status"] == "COMPLETED"
    again = client.raw("mutation C($id: ULID!) { cancelRun(runID: $id) { id } }", {"id": run_id}).json()
    assert again["data"] is None and "already ended" in again["errors"][0]["message"]
    assert again["errors"][0]["extensions"]["code"] == 409


def test_rerun_and_invoke_mutations_start_runs(stack: tuple[Server, App, str]) -> None:
    server, app, _ = stack
    client = gql(server)
    run_id, _ = run_for(server, server.send("compat/three", {"echo": "again"}), "COMPLETED")
    new_id = client.query("mutation R($id: ULID!) { rerun(runID: $id) }", {"id": run_id})["rerun"]
    assert new_id != run_id
    rerun = client.wait_for_run_status(new_id, "COMPLETED")
    assert json.loads(rerun.output)["echo"] == "again"

    started = datetime.now(UTC) - timedelta(seconds=1)
    slug = f"{app.app_id}-child"
    assert client.query('mutation I($slug: String!) { invokeFunction(functionSlug: $slug, data: {n: 21}) }',
                        {"slug": slug})["invokeFunction"] is True
    fn = client.query("query F($slug: String!) { functionBySlug(query: {functionSlug: $slug}) { id slug } }",
                      {"slug": slug})["functionBySlug"]
    assert fn["slug"] == slug
    runs_query = """
      query Runs($from: Time!, $fn: [UUID!], $after: String) {
        runs(first: 1, after: $after, orderBy: [{field: QUEUED_AT, direction: DESC}],
             filter: {from: $from, functionIDs: $fn}) {
          totalCount
          pageInfo { hasNextPage endCursor }
          edges { cursor node { id status output function { slug } } }
        }
      }"""

    def invoked() -> dict[str, Any] | None:
        page = client.query(runs_query, {"from": started.isoformat(), "fn": [fn["id"]]})["runs"]
        nodes = [e["node"] for e in page["edges"]]
        return nodes[0] if nodes and nodes[0]["status"] == "COMPLETED" else None

    node = wait_until(invoked, timeout=30, message="the invoked run")
    assert json.loads(node["output"]) == {"doubled": 42, "invoked_by": "inngest/function.invoked"}
    assert node["function"]["slug"] == slug


def test_runs_pages_and_filters(stack: tuple[Server, App, str]) -> None:
    server, app, _ = stack
    client = gql(server)
    since = datetime.now(UTC)  # the database clock is this host's
    ids = [run_for(server, server.send("compat/three", {"echo": n}), "COMPLETED")[0] for n in range(3)]
    query = """
      query Runs($from: Time!, $after: String, $status: [FunctionRunStatus!]) {
        runs(first: 2, after: $after, orderBy: [{field: QUEUED_AT, direction: DESC}],
             filter: {from: $from, status: $status}) {
          totalCount
          pageInfo { hasNextPage endCursor }
          edges { cursor node { id status } }
        }
      }"""
    first = client.query(query, {"from": since.isoformat(), "status": ["COMPLETED"]})["runs"]
    assert first["totalCount"] == 3 and first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in first["edges"]] == ids[::-1][:2]
    second = client.query(query, {"from": since.isoformat(), "status": ["COMPLETED"],
                                  "after": first["pageInfo"]["endCursor"]})["runs"]
    assert [e["node"]["id"] for e in second["edges"]] == [ids[0]] and not second["pageInfo"]["hasNextPage"]
    assert client.query(query, {"from": since.isoformat(), "status": ["FAILED"]})["runs"]["totalCount"] == 0

    listed = client.query("{ apps { name functionCount functions { slug triggers { type value } } } }"
                          )["apps"]
    mine = next(a for a in listed if a["name"] == app.app_id)
    assert any(f["slug"] == f"{app.app_id}-three-steps"
               and f["triggers"] == [{"type": "EVENT", "value": "compat/three"}] for f in mine["functions"])
    assert mine["functionCount"] == len(mine["functions"])
    run = client.query("query F($id: ID!) { functionRun(query: {functionRunId: $id}) {"
                       " id status output eventID"
                       " event { name payload } } }", {"id": ids[0]})["functionRun"]
    assert run["status"] == "COMPLETED" and json.loads(run["event"]["payload"]) == {"echo": 0}
    event = client.query("query E($id: ID!) { event(query: {eventId: $id}) { name status totalRuns raw } }",
                         {"id": run["eventID"]})["event"]
    assert (event["name"], event["status"], event["totalRuns"]) == ("compat/three", "COMPLETED", 1)
    assert json.loads(event["raw"])["data"] == {"echo": 0}


def _start_flow_app(server: Server) -> App:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**sdk_env(server, production=server.mode == "serve"), "PY_APP_ID": "py-flow"}
    if server.mode != "serve":
        env.update(INNGEST_SIGNING_KEY="", INNGEST_EVENT_KEY="")
    argv = [sys.executable, "-m", "uvicorn", "tests.compat.apps.py_flow_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    proc = start_process("py-flow-app", argv, env=env, url=base)
    wait_http(proc, "/ledger", timeout=60)
    return App(proc, base + "/api/inngest", "py-flow", base)


def test_a_batch_run_holds_every_event(stack: tuple[Server, App, str]) -> None:
    server, _, sdk = stack
    if sdk != "py":
        return  # the batch function lives in the Python flow app, started once per server mode
    flow = _start_flow_app(server)
    try:
        sync_via_put(flow, server, expect_functions=FLOW_FUNCTIONS)
        client = gql(server)
        sent = [server.send("flow/batch", {"n": n}) for n in range(3)]
        [run_id] = client.get_run_ids_from_event_id(sent[0], run_count=1, timeout=30)
        for event_id in sent[1:]:
            assert client.get_run_ids_from_event_id(event_id, run_count=1) == [run_id]
        run = client.wait_for_run_status(run_id, "COMPLETED")
        assert json.loads(run.output) == [0, 1, 2] and run.event.data == {"n": 0}
        trigger = client.query(
            "query T($id: String!) { runTrigger(runID: $id) { IDs payloads isBatch eventName } }",
            {"id": run_id})["runTrigger"]
        assert trigger["IDs"] == sent and trigger["isBatch"] is True and trigger["eventName"] == "flow/batch"
        assert [json.loads(p)["data"] for p in trigger["payloads"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert trace_of(server, run_id)["isBatch"] is True
    finally:
        flow.proc.terminate()


def test_production_mode_asks_for_the_rest_credentials(stack: tuple[Server, App, str]) -> None:
    server, _, _ = stack
    bare = httpx.post(f"{server.url}/v0/gql", json={"query": "{ functions { slug } }"}, timeout=10)
    if server.mode == "serve":
        assert bare.status_code == 401 and "error" in bare.json()
        wrong = httpx.post(f"{server.url}/v0/gql", json={"query": "{ functions { slug } }"},
                           headers={"authorization": "Bearer signkey-test-00"}, timeout=10)
        assert wrong.status_code == 401
    else:
        assert bare.status_code == 200 and bare.json()["data"]["functions"]
