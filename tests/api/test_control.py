"""Run control over REST against a real database and a real run: bulk cancellation with an `if`
expression, replay, pause/resume, direct invoke."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.app import create_app
from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from pgqueue.settings import Settings

REGISTER = {
    "appName": "ctl",
    "url": "http://127.0.0.1:9/api/inngest",
    "functions": [
        {"id": "ctl-work", "name": "work", "triggers": [{"event": "ctl/work"}]},
        {"id": "ctl-other", "name": "other", "triggers": [{"event": "ctl/other"}]},
    ],
}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app = create_app(Settings(database_url=database_url, poll_interval_ms=200), run_services=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            assert (await c.post("/fn/register", json=REGISTER)).status_code == 200
            c.app = app  # type: ignore[attr-defined]
            yield c, database_url


async def _runs_for(c: httpx.AsyncClient, app, events: list[dict]) -> list[str]:  # type: ignore[no-untyped-def]
    r = await c.post("/e/key", json=events)
    ids = r.json()["ids"]
    await Runner(app.state.pool, wakeup=Wakeup()).drain()
    out = []
    for event_id in ids:
        out += [run["run_id"] for run in (await c.get(f"/v1/events/{event_id}/runs")).json()["data"]]
    return out


async def test_bulk_cancel_with_if_expression(client: tuple[httpx.AsyncClient, str]) -> None:
    c, _ = client
    app = c.app  # type: ignore[attr-defined]
    work = [{"name": "ctl/work", "data": {"tier": t}} for t in ("free", "pro", "free")]
    run_ids = await _runs_for(c, app, work)
    other = await _runs_for(c, app, [{"name": "ctl/other", "data": {"tier": "free"}}])
    r = await c.post("/v1/cancellations", json={
        "app_id": "ctl", "function_id": "ctl-work",
        "started_before": (datetime.now(UTC) + timedelta(seconds=5)).isoformat(),
        "if": "event.data.tier == 'free'",
    })
    assert r.status_code == 201, r.text
    assert r.json()["data"]["cancelled"] == 2
    statuses = [(await c.get(f"/v1/runs/{rid}")).json()["data"]["status"] for rid in run_ids]
    assert statuses == ["Cancelled", "Queued", "Cancelled"]
    assert (await c.get(f"/v1/runs/{other[0]}")).json()["data"]["status"] == "Queued"
    listed = (await c.get("/v1/cancellations")).json()["data"]
    assert listed[0]["cancelled"] == 2 and listed[0]["if"] == "event.data.tier == 'free'"
    assert (await c.delete(f"/v1/cancellations/{listed[0]['id']}")).status_code == 200
    assert (await c.delete(f"/v1/cancellations/{listed[0]['id']}")).status_code == 404
    bad = await c.post("/v1/cancellations",
                       json={"app_id": "ctl", "function_id": "ctl-work", "if": "event.data =="})
    assert bad.status_code == 400 and "invalid `if` expression" in bad.json()["error"]
    missing = await c.post("/v1/cancellations", json={"app_id": "nope", "function_id": "ctl-work"})
    assert missing.status_code == 404


async def test_bulk_cancel_takes_inngests_shape_and_the_slug(client: tuple[httpx.AsyncClient, str]) -> None:
    """Inngest's body names the function by the id the SDK declares (`work`, in app `ctl`); the
    slug (`ctl-work`) and the UUID keep working; a 404 names the forms accepted."""
    c, _ = client
    app = c.app  # type: ignore[attr-defined]
    later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    first = await _runs_for(c, app, [{"name": "ctl/work"}])
    r = await c.post("/v1/cancellations", json={
        "app_id": "ctl", "function_id": "work",
        "started_after": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "started_before": later,
    })
    assert r.status_code == 201, r.text
    assert r.json()["data"]["cancelled"] == 1
    assert (await c.get(f"/v1/runs/{first[0]}")).json()["data"]["status"] == "Cancelled"
    fn_uuid = r.json()["data"]["function_id"]
    for ref in ("ctl-work", fn_uuid):
        [run_id] = await _runs_for(c, app, [{"name": "ctl/work"}])
        r = await c.post("/v1/cancellations",
                         json={"app_id": "ctl", "function_id": ref, "started_before": later})
        assert r.status_code == 201 and r.json()["data"]["cancelled"] == 1, (ref, r.text)
        assert (await c.get(f"/v1/runs/{run_id}")).json()["data"]["status"] == "Cancelled"
    [oldest] = await _runs_for(c, app, [{"name": "ctl/work"}])
    r = await c.post("/v1/cancellations", json={  # the window's slack reaches before 1970: still one window
        "app_id": "ctl", "function_id": "work", "started_after": "1970-01-01T00:00:00Z",
        "started_before": later})
    assert r.status_code == 201 and r.json()["data"]["cancelled"] == 1, r.text
    assert (await c.get(f"/v1/runs/{oldest}")).json()["data"]["status"] == "Cancelled"
    missing = await c.post("/v1/cancellations", json={"app_id": "ctl", "function_id": "long-sleep"})
    assert missing.status_code == 404
    message = missing.json()["error"]
    assert "'long-sleep' not found in app 'ctl'" in message
    assert "'ctl-long-sleep'" in message and "UUID" in message
    no_app = await c.post("/v1/cancellations", json={"app_id": "shop", "function_id": "work"})
    assert no_app.status_code == 404 and "app 'shop' not found" in no_app.json()["error"]


async def test_replay_creates_a_new_run_from_the_same_event(client: tuple[httpx.AsyncClient, str]) -> None:
    c, database_url = client
    app = c.app  # type: ignore[attr-defined]
    [run_id] = await _runs_for(c, app, [{"name": "ctl/work", "data": {"n": 1}}])
    assert (await c.post(f"/v1/runs/{run_id}/replay")).status_code == 409  # still queued
    assert (await c.delete(f"/v1/runs/{run_id}")).status_code == 200
    r = await c.post(f"/v1/runs/{run_id}/replay")
    assert r.status_code == 201, r.text
    new = r.json()["data"]
    assert new["run_id"] != run_id and new["status"] == "Queued" and new["event_id"]
    runs_of_event = (await c.get(f"/v1/events/{new['event_id']}/runs")).json()["data"]
    assert {x["run_id"] for x in runs_of_event} == {run_id, new["run_id"]}
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE run_id = %s",
                            (new["run_id"],)).fetchone() == (1,)
    r = await c.post("/v1/functions/ctl-work/replay", json={
        "started_after": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()})
    assert r.status_code == 201 and len(r.json()["data"]["run_ids"]) == 1
    r = await c.post("/v1/functions/ctl-work/replay", json={"started_after": "1970-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text  # the ids' ten minutes of slack reach before 1970: clamped, not a 500


async def test_paused_function_stores_events_but_starts_nothing(
    client: tuple[httpx.AsyncClient, str],
) -> None:
    c, _ = client
    app = c.app  # type: ignore[attr-defined]
    assert (await c.post("/v1/functions/ctl-work/pause")).json()["data"]["paused"] is True
    r = await c.post("/e/key", json={"name": "ctl/work"})
    event_id = r.json()["ids"][0]
    await Runner(app.state.pool, wakeup=Wakeup()).drain()
    assert (await c.get(f"/v1/events/{event_id}/runs")).json()["data"] == []
    assert (await c.get(f"/v1/events/{event_id}")).json()["data"]["skip_reason"] == "function paused"
    assert (await c.post("/v1/functions/ctl-work/resume")).json()["data"]["paused"] is False
    assert await _runs_for(c, app, [{"name": "ctl/work"}])
    assert (await c.post("/v1/functions/nope/pause")).status_code == 404


async def test_direct_invoke(client: tuple[httpx.AsyncClient, str]) -> None:
    c, _ = client
    r = await c.post("/invoke/ctl-other", json={"data": {"x": 1}})
    assert r.status_code == 200, r.text
    body = r.json()
    run = (await c.get(f"/v1/runs/{body['run_id']}")).json()["data"]
    assert run["status"] == "Queued" and run["event_id"] == body["id"]
    event = (await c.get(f"/v1/events/{body['id']}")).json()["data"]
    assert event["name"] == "inngest/function.invoked" and event["data"]["x"] == 1
    assert (await c.post("/invoke/ctl-missing", json={})).status_code == 404
    bad = await c.post("/invoke/ctl-other", json={"data": [1]})
    assert bad.status_code == 400 and bad.json()["status"] == 400
