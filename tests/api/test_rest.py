"""REST read side: unknown ids are 404 with the SDK error shape; bad query parameters are 400;
/health checks the schema."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from pgqueue.db import migrate
from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from tests.api.conftest import Api, ApiFactory, assert_error, function, register_body

UNKNOWN_ULID = "01JZZZZZZZZZZZZZZZZZZZZZZZ"

NOT_FOUND = [
    ("GET", f"/v1/events/{UNKNOWN_ULID}", f"event {UNKNOWN_ULID} not found"),
    ("GET", "/v1/events/not-an-id", "event not-an-id not found"),
    ("GET", f"/v1/events/{UNKNOWN_ULID}/runs", "not found"),
    ("GET", f"/v1/runs/{UNKNOWN_ULID}", f"run {UNKNOWN_ULID} not found"),
    ("GET", "/v1/runs/x", "run x not found"),
    ("GET", f"/v1/runs/{UNKNOWN_ULID}/jobs", "not found"),
    ("GET", f"/v1/runs/{UNKNOWN_ULID}/metadata", f"run {UNKNOWN_ULID} not found"),
    ("DELETE", f"/v1/runs/{UNKNOWN_ULID}", "not found"),
    ("GET", f"/v0/runs/{UNKNOWN_ULID}/actions", "not found"),
    ("GET", f"/v0/runs/{UNKNOWN_ULID}/batch", "not found"),
    ("DELETE", f"/v0/runs/{UNKNOWN_ULID}", "not found"),
    ("GET", "/v1/apps/no-such-app/functions", "app no-such-app not found"),
    ("GET", f"/v1/apps/{uuid.uuid4()}/functions", "not found"),
    ("GET", "/v1/no-such-endpoint", "not found"),
    ("GET", "/v2/anything", "not found"),
]


@pytest.mark.parametrize(("method", "path", "fragment"), NOT_FOUND, ids=[f"{m} {p}" for m, p, _ in NOT_FOUND])
async def test_unknown_ids_are_404_with_the_error_shape(
    shared_api: Api, method: str, path: str, fragment: str
) -> None:
    resp = await shared_api.client.request(method, path)
    assert_error(resp, 404, fragment)


BAD_QUERIES = [
    ("/v1/runs?limit=0", "limit"),
    ("/v1/runs?limit=501", "limit"),
    ("/v1/runs?limit=ten", "limit"),
    ("/v1/runs?status=sleeping", "status must be one of"),
    ("/v1/events?limit=0", "limit"),
    ("/v1/events?received_after=yesterday", "received_after"),
    ("/v1/apps/shop/functions?include_archived=maybe", "include_archived"),
]


@pytest.mark.parametrize(("path", "fragment"), BAD_QUERIES, ids=[p for p, _ in BAD_QUERIES])
async def test_bad_query_parameters_are_400(shared_api: Api, path: str, fragment: str) -> None:
    assert_error(await shared_api.client.get(path), 400, fragment)


async def test_wrong_method_is_405_with_the_error_shape(shared_api: Api) -> None:
    assert_error(await shared_api.client.get("/e/some-key"), 405)
    assert_error(await shared_api.client.get("/fn/register"), 405)


async def test_known_run_and_event_are_found(api: Api) -> None:
    body = register_body(function("shop-on-order", {"event": "shop/order.created"}))
    assert (await api.client.post("/fn/register", json=body)).status_code == 200
    resp = await api.client.post("/e/k", json={"name": "shop/order.created", "data": {"n": 1}})
    [event_id] = resp.json()["ids"]
    tick = await Runner(api.app.state.pool, wakeup=Wakeup()).run_once()
    assert tick.runs_created == 1
    runs = (await api.client.get(f"/v1/events/{event_id}/runs")).json()["data"]
    [run] = runs
    assert run["status"] == "Queued" and run["function_slug"] == "shop-on-order"
    got = (await api.client.get(f"/v1/runs/{run['run_id']}")).json()["data"]
    assert got["event_id"] == event_id
    assert (await api.client.get(f"/v0/runs/{run['run_id']}/actions")).json() == {}
    batch = (await api.client.get(f"/v0/runs/{run['run_id']}/batch")).json()
    assert [e["name"] for e in batch] == ["shop/order.created"]
    listed = (await api.client.get("/v1/runs")).json()["data"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    cancelled = (await api.client.delete(f"/v1/runs/{run['run_id']}")).json()["data"]
    assert cancelled["status"] == "Cancelled"
    # Cancelling again is a conflict, in the same shape.
    assert_error(await api.client.delete(f"/v1/runs/{run['run_id']}"), 409, "already ended")


async def test_metadata_and_sessions_are_shown_by_the_api_and_the_dashboard(api: Api) -> None:
    body = register_body(function("shop-on-chat", {"event": "shop/chat"}))
    assert (await api.client.post("/fn/register", json=body)).status_code == 200
    resp = await api.client.post("/e/k", json={"name": "shop/chat",
                                               "meta": {"sessions": {"conversation": "c-9"}}})
    [event_id] = resp.json()["ids"]
    await Runner(api.app.state.pool, wakeup=Wakeup()).run_once()
    [run] = (await api.client.get(f"/v1/events/{event_id}/runs")).json()["data"]
    run_id = run["run_id"]
    # The SDK's use_api path sees the event as a call would: `user` and its sessions.
    [event] = (await api.client.get(f"/v0/runs/{run_id}/batch")).json()
    assert (event["user"], event["meta"]) == ({}, {"sessions": {"conversation": "c-9"}})

    for target, values in (({}, {"stage": "triage"}), ({"step_id": "reply"}, {"tokens": 12})):
        r = await api.client.post(f"/v1/runs/{run_id}/metadata", json={
            "target": {"run_id": run_id, **target},
            "metadata": [{"kind": "userland.notes", "op": "merge", "values": values}]})
        assert r.status_code == 200, r.text
    assert_error(await api.client.post(f"/v1/runs/{UNKNOWN_ULID}/metadata", json={
        "metadata": [{"kind": "userland.notes", "op": "set", "values": {}}]}), 404, "not found")
    assert_error(await api.client.post(f"/v1/runs/{run_id}/metadata", content=b"{",
                                       headers={"content-type": "application/json"}), 400, "not valid JSON")

    got = (await api.client.get(f"/v1/runs/{run_id}")).json()["data"]
    assert [(m["scope"], m["kind"], m["values"]) for m in got["metadata"]] == [
        ("run", "userland.notes", {"stage": "triage"})]
    listed = (await api.client.get(f"/v1/runs/{run_id}/metadata")).json()["data"]
    assert [(m["scope"], m.get("step_id"), m["values"]) for m in listed] == [
        ("run", None, {"stage": "triage"}),
        ("step", hashlib.sha1(b"reply").hexdigest(), {"tokens": 12})]

    page = (await api.client.get(f"/runs/{run_id}")).text
    assert 'id="run-metadata"' in page and "userland.notes" in page and "triage" in page
    assert "tokens" in page  # a step not (yet) stored: shown in the run's card with its step id
    assert "conversation=c-9" in page
    event_page = (await api.client.get(f"/events/{event_id}")).text
    assert 'id="event-sessions"' in event_page and "c-9" in event_page


async def test_health_on_a_migrated_database(shared_api: Api) -> None:
    resp = await shared_api.client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "mode": "dev", "schema_version": migrate.head_version()}


async def test_health_on_an_empty_database_names_the_fix(
    make_api: ApiFactory, empty_database_url: str
) -> None:
    api = await make_api(url=empty_database_url)
    resp = await api.client.get("/health")
    message = assert_error(resp, 503, "pgqueue migrate")
    assert "no pgqueue schema" in message


async def test_requests_on_an_empty_database_are_503_naming_the_fix(
    make_api: ApiFactory, empty_database_url: str
) -> None:
    api = await make_api(url=empty_database_url)
    assert_error(await api.client.post("/e/key", json={"name": "shop/a"}), 503, "pgqueue migrate")
    assert_error(await api.client.get("/v1/runs"), 503, "pgqueue migrate")
    body = register_body(function("shop-fn"))
    assert_error(await api.client.post("/fn/register", json=body), 503, "pgqueue migrate")


async def test_database_unavailable_is_503(make_api: ApiFactory) -> None:
    api = await make_api()
    await api.app.state.pool.close()  # stands in for a database that went away
    assert_error(await api.client.post("/e/key", json={"name": "shop/a"}), 503, "database unavailable")
    assert_error(await api.client.get("/health"), 503, "database unreachable")
