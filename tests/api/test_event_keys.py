"""Event keys kept in the database: created, named, limited to event names and revoked over REST
without a restart, stored only as hashes; PGQUEUE_EVENT_KEYS keeps working beside them."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import BEARER, EVENT_KEY, SERVE_SETTINGS, Api, ApiFactory, assert_error


async def _send(api: Api, key: str, *names: str) -> Any:
    return await api.client.post(f"/e/{key}", json=[{"name": n, "data": {}} for n in names])


async def test_create_use_limit_and_revoke_a_key_without_a_restart(make_api: ApiFactory) -> None:
    api = await make_api(**SERVE_SETTINGS)
    r = await api.client.post("/v1/event-keys", json={"name": "checkout service"}, headers=BEARER)
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    key = created["key"]
    assert key.startswith("evk_") and created["event_names"] is None and created["revoked_at"] is None
    assert (await _send(api, key, "shop/order.created")).status_code == 200
    assert (await _send(api, EVENT_KEY, "shop/order.created")).status_code == 200  # the environment's key too

    limited = (
        await api.client.post(
            "/v1/event-keys",
            headers=BEARER,
            json={"name": "orders only", "event_names": ["shop/order.*", "billing/paid"]},
        )
    ).json()["data"]
    assert (await _send(api, limited["key"], "shop/order.created", "billing/paid")).status_code == 200
    before = await api.counts()
    refused = await _send(api, limited["key"], "shop/order.created", "user/deleted")
    assert_error(refused, 403, "event 1", "'orders only' may not send 'user/deleted'", "shop/order.*")
    assert await api.counts() == before  # all or nothing

    listed = (await api.client.get("/v1/event-keys", headers=BEARER)).json()["data"]
    assert {k["name"] for k in listed} == {"checkout service", "orders only"}
    assert all("key" not in k and k["key_prefix"] == k["key_prefix"][:8] for k in listed)
    stored = await api.rows("SELECT row_to_json(k)::text AS text FROM pgqueue.event_keys k")
    assert not any(key in row["text"] or limited["key"] in row["text"] for row in stored)

    patched = await api.client.patch(
        f"/v1/event-keys/{limited['id']}", headers=BEARER, json={"event_names": None, "name": "anything now"}
    )
    assert patched.status_code == 200 and patched.json()["data"]["event_names"] is None
    assert (await _send(api, limited["key"], "user/deleted")).status_code == 200

    revoked = await api.client.delete(f"/v1/event-keys/{created['id']}", headers=BEARER)
    assert revoked.status_code == 200 and revoked.json()["data"]["revoked_at"] is not None
    assert_error(await _send(api, key, "shop/order.created"), 401, "Event key not found")
    assert (await _send(api, EVENT_KEY, "shop/order.created")).status_code == 200
    assert (await api.client.delete("/v1/event-keys/nope", headers=BEARER)).status_code == 404


async def test_key_requests_are_validated(serve_api: Api) -> None:
    c = serve_api.client
    assert (await c.post("/v1/event-keys", json={"name": "x"})).status_code == 401  # REST needs the bearer
    assert_error(await c.post("/v1/event-keys", headers=BEARER, json={}), 400, "`name`")
    assert_error(
        await c.post("/v1/event-keys", headers=BEARER, json={"name": "x", "event_names": []}),
        400,
        "`event_names`",
    )
    assert_error(
        await c.post("/v1/event-keys", headers=BEARER, json={"name": "x", "event_names": ["a*b"]}),
        400,
        "wildcard",
    )


async def test_serve_without_environment_keys_takes_database_keys(make_api: ApiFactory) -> None:
    api = await make_api(**{**SERVE_SETTINGS, "event_keys": ()})
    assert_error(await _send(api, "anything", "a/b"), 401, "Event key not found")
    key = (await api.client.post("/v1/event-keys", json={"name": "only"}, headers=BEARER)).json()["data"][
        "key"
    ]
    assert (await _send(api, key, "a/b")).status_code == 200


async def test_dev_mode_accepts_any_key_but_applies_a_stored_keys_filter(api: Api) -> None:
    limited = (await api.client.post("/v1/event-keys", json={"name": "l", "event_names": ["a/*"]})).json()[
        "data"
    ]
    assert (await _send(api, "whatever", "b/c")).status_code == 200
    assert_error(await _send(api, limited["key"], "b/c"), 403, "may not send 'b/c'")
