"""Re-sync semantics: archived functions start nothing and their live runs end Cancelled (with
their waits and cancel listeners removed and the cancellation events emitted); changed functions
keep their runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from api.app import create_app
from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from pgqueue.settings import Settings


def register_body(*fns: str, cancel: bool = False) -> dict:
    functions = []
    for fn in fns:
        f: dict = {"id": f"rs-{fn}", "name": fn, "triggers": [{"event": f"rs/{fn}"}]}
        if cancel:
            f["cancel"] = [{"event": "rs/stop", "if": "event.data.id == async.data.id"}]
        functions.append(f)
    return {"appName": "rs", "url": "http://127.0.0.1:9/api/inngest", "functions": functions}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, Runner]]:
    app = create_app(Settings(database_url=database_url), run_services=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c, database_url, Runner(app.state.pool, wakeup=Wakeup())


async def test_resync_archives_removed_functions_and_cancels_their_runs(
    client: tuple[httpx.AsyncClient, str, Runner],
) -> None:
    c, url, runner = client
    assert (await c.post("/fn/register", json=register_body("keep", "drop", cancel=True))).status_code == 200
    ids = (await c.post("/e/k", json=[{"name": "rs/keep", "data": {"id": 1}},
                                      {"name": "rs/drop", "data": {"id": 2}}])).json()["ids"]
    await runner.drain()
    [keep] = (await c.get(f"/v1/events/{ids[0]}/runs")).json()["data"]
    [drop] = (await c.get(f"/v1/events/{ids[1]}/runs")).json()["data"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue.pauses WHERE run_id = %s",
                            (drop["run_id"],)).fetchone() == (1,)
    # The run's own cancelOn listener is on rs/stop; something else listens for finished runs here
    # (an invoke or a waitForEvent elsewhere), so the cancellation is emitted.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.pause_paths (event_name, match_path)"
                     " VALUES ('inngest/function.finished', 'data.correlation_id')")

    r = await c.post("/fn/register", json=register_body("keep", cancel=True))
    assert r.status_code == 200 and r.json()["modified"] is True

    drop_now = (await c.get(f"/v1/runs/{drop['run_id']}")).json()["data"]
    assert drop_now["status"] == "Cancelled" and "removed" in drop_now["error"]["message"]
    assert (await c.get(f"/v1/runs/{keep['run_id']}")).json()["data"]["status"] == "Queued"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue.pauses WHERE run_id = %s",
                            (drop["run_id"],)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE run_id = %s",
                            (drop["run_id"],)).fetchone() == (0,)
        names = [r[0] for r in conn.execute(
            "SELECT name FROM pgqueue.events WHERE data->>'run_id' = %s ORDER BY name",
            (drop["run_id"],)).fetchall()]
    assert names == ["inngest/function.cancelled", "inngest/function.finished"]
    # The archived function starts nothing; listing shows it only on request.
    new = (await c.post("/e/k", json={"name": "rs/drop"})).json()["ids"][0]
    await runner.drain()
    assert (await c.get(f"/v1/events/{new}/runs")).json()["data"] == []
    listed = (await c.get("/v1/apps/rs/functions", params={"include_archived": "true"})).json()["data"]
    assert {f["slug"]: f["archived"] for f in listed} == {"rs-keep": False, "rs-drop": True}
