"""One hop from event to step: POST /e starts the events' runs in its own transaction, so they
exist (with their first call queued) when the request returns, with no runner involved. Events
for functions that debounce, batch or rate limit are left in the inbox for the runner, and so is
anything that fails for a reason that may pass (a lost connection, a deadlock): nothing is lost.
An error tied to the event is recorded on it, as the runner records it."""

from __future__ import annotations

from typing import Any

from pgqueue.apps import registration
from pgqueue.store import apps
from tests.api.conftest import Api, ApiFactory

FUNCTIONS: list[dict[str, Any]] = [
    {"id": "plain", "triggers": [{"event": "shop/plain"}]},
    {"id": "waits", "triggers": [{"event": "shop/plain"}],
     "cancel": [{"event": "shop/stop", "if": "async.data.id == event.data.id"}]},
    {"id": "debounced", "triggers": [{"event": "shop/debounced"}], "debounce": {"period": "5s"}},
]


async def _sync(api: Api) -> None:
    async with api.app.state.pool.connection() as conn, conn.transaction():
        await apps.sync(conn, registration.parse_register(
            {"appName": "shop", "url": "http://127.0.0.1:9/api/inngest", "functions": FUNCTIONS}))


async def test_runs_exist_when_the_request_returns(make_api: ApiFactory) -> None:
    api = await make_api(inline_start=True)
    await _sync(api)
    resp = await api.client.post("/e/k", json=[{"name": "shop/plain", "data": {"id": 1}},
                                               {"name": "nobody/listens"}])
    assert resp.status_code == 200
    [plain_event, other] = resp.json()["ids"]
    runs = await api.rows("SELECT f.slug, r.event_id FROM pgqueue.runs r JOIN pgqueue.functions f"
                          " ON f.id = r.function_id ORDER BY f.slug")
    assert runs == [{"slug": "plain", "event_id": plain_event}, {"slug": "waits", "event_id": plain_event}]
    assert await api.rows("SELECT kind, step_id FROM pgqueue.queue_items WHERE kind = 'call'") == [
        {"kind": "call", "step_id": "step"}, {"kind": "call", "step_id": "step"}]
    assert (await api.counts())["event_inbox"] == 0
    # The cancel listener exists too: a later event cancels the waiting run.
    assert len(await api.rows("SELECT 1 FROM pgqueue.pauses WHERE kind = 'cancel'")) == 1
    await api.client.post("/e/k", json={"name": "shop/stop", "data": {"id": 1}})
    [cancelled] = await api.rows("SELECT status::text FROM pgqueue.runs r JOIN pgqueue.functions f"
                                 " ON f.id = r.function_id WHERE f.slug = 'waits'")
    assert cancelled == {"status": "cancelled"} and other


async def test_debounced_functions_are_left_to_the_runner(make_api: ApiFactory) -> None:
    api = await make_api(inline_start=True)
    await _sync(api)
    resp = await api.client.post("/e/k", json={"name": "shop/debounced"})
    assert resp.status_code == 200
    assert (await api.counts())["event_inbox"] == 1
    assert await api.rows("SELECT id FROM pgqueue.runs") == []


async def test_an_event_whose_run_cannot_start_is_stored_with_the_reason(make_api: ApiFactory) -> None:
    """A real database error while starting the run (a trigger refusing it) is handled as the
    runner handles it: the request succeeds, the event is stored and says why it started nothing."""
    api = await make_api(inline_start=True)
    await _sync(api)
    async with api.app.state.pool.connection() as conn:
        await conn.execute("""
            CREATE FUNCTION pgqueue_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by the test'; END $$""")
        await conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON pgqueue.runs"
                           " FOR EACH ROW EXECUTE FUNCTION pgqueue_test_refuse()")
    resp = await api.client.post("/e/k", json={"name": "shop/plain"})
    assert resp.status_code == 200, resp.text
    [event_id] = resp.json()["ids"]
    assert await api.rows("SELECT id FROM pgqueue.runs") == []
    [event] = await api.rows("SELECT skip_reason FROM pgqueue.events WHERE id = %s", (event_id,))
    assert "could not start runs" in event["skip_reason"] and "refused by the test" in event["skip_reason"]
