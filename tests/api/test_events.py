"""POST /e/{event_key}: validation, all-or-nothing storage, seeded ids and `id` de-duplication."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest

from pgqueue import ids
from pgqueue.db.notify import Wakeup
from pgqueue.runner.loop import Runner
from tests.api.conftest import EVENT_KEY, Api, ApiFactory, assert_error, function, register_body

NOTHING = {"events": 0, "event_inbox": 0, "event_dedupe": 0}


def body_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


async def post(api: Api, value: Any, *, key: str = "dev-key", headers: dict[str, str] | None = None) -> Any:
    return await api.client.post(
        f"/e/{key}", content=body_of(value), headers={"content-type": "application/json", **(headers or {})}
    )


def deeply_nested(depth: int) -> bytes:
    return b'{"name": "deep", "data": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


BAD_EVENTS: list[tuple[str, Any, str]] = [
    # The body itself
    ("truncated-json", b'{"name": "shop/order.created", ', "not valid JSON"),
    ("trailing-garbage", b'{"name": "a"} {"name": "b"}', "not valid JSON"),
    ("nan", b'{"name": "a", "data": {"x": NaN}}', "NaN"),
    ("infinity", b'{"name": "a", "data": {"x": -Infinity}}', "Infinity"),
    ("invalid-utf8", b'{"name": "caf\xe9"}', "not valid JSON"),
    ("too-deep", deeply_nested(100_000), "not valid JSON"),
    ("empty-body", b"", "empty"),
    ("blank-body", b" \n\t ", "empty"),
    ("empty-array", b"[]", "no events"),
    ("json-null", b"null", "event 0 must be a JSON object"),
    ("json-string", b'"shop/order.created"', "event 0 must be a JSON object"),
    ("number-in-array", b"[1]", "event 0 must be a JSON object"),
    ("null-in-array", b"[null]", "event 0 must be a JSON object"),
    ("array-in-array", b"[[]]", "event 0 must be a JSON object"),
    # name
    ("missing-name", {"data": {}}, "`name` is required"),
    ("empty-name", {"name": ""}, "`name` is required"),
    ("blank-name", {"name": "   "}, "`name` is required"),
    ("name-not-string", {"name": 7}, "`name` is required"),
    ("name-null", {"name": None}, "`name` is required"),
    ("name-too-long", {"name": "a" * 513}, "longer than 512"),
    ("reserved-name", {"name": "inngest/function.finished"}, "reserved"),
    ("reserved-name-scheduled", {"name": "inngest/scheduled.timer"}, "reserved"),
    # data, user, v
    ("data-list", {"name": "a", "data": [1, 2]}, "`data` must be a JSON object"),
    ("data-string", {"name": "a", "data": "hello"}, "`data` must be a JSON object"),
    ("data-number", {"name": "a", "data": 5}, "`data` must be a JSON object"),
    ("data-false", {"name": "a", "data": False}, "`data` must be a JSON object"),
    ("user-list", {"name": "a", "user": ["u"]}, "`user` must be a JSON object"),
    ("v-number", {"name": "a", "v": 1}, "`v` must be a string"),
    # ts
    ("ts-string", {"name": "a", "ts": "1700000000000"}, "`ts`"),
    ("ts-negative", {"name": "a", "ts": -1}, "`ts`"),
    ("ts-fraction", {"name": "a", "ts": 1700000000000.5}, "`ts`"),
    ("ts-bool", {"name": "a", "ts": True}, "`ts`"),
    ("ts-object", {"name": "a", "ts": {"ms": 1}}, "`ts`"),
    ("ts-too-large", {"name": "a", "ts": 2**60}, "`ts`"),
    ("ts-overflowing-float", b'{"name": "a", "ts": 1e400}', "`ts`"),
    # id
    ("id-number", {"name": "a", "id": 5}, "`id` must be a string"),
    ("id-object", {"name": "a", "id": {"k": 1}}, "`id` must be a string"),
    ("id-bool", {"name": "a", "id": True}, "`id` must be a string"),
    ("id-too-long", {"name": "a", "id": "x" * 1025}, "`id` is longer"),
    # meta: the sessions an event carries (pgqueue/events/meta.py; tests/unit/test_event_meta.py)
    ("meta-list", {"name": "a", "meta": ["s"]}, "`meta` must be a JSON object"),
    ("meta-session-bool", {"name": "a", "meta": {"sessions": {"conv": True}}}, "string or a number"),
    ("meta-six-sessions", {"name": "a", "meta": {"sessions": {k: "1" for k in "abcdef"}}},
     "at most 5 sessions"),
    ("meta-null-propagated", {"name": "a", "meta": {"propagated_sessions": {"a": None}}}, "null only cuts"),
    ("meta-nul-in-session", {"name": "a", "meta": {"sessions": {"conv": "c\x00"}}}, "NUL"),
    # What PostgreSQL's jsonb cannot store
    ("nul-in-data-value", {"name": "a", "data": {"k": "x\x00y"}}, "NUL"),
    ("nul-in-data-key", {"name": "a", "data": {"k\x00": 1}}, "NUL"),
    ("nul-nested-in-list", {"name": "a", "data": {"l": [{"deep": ["\x00"]}]}}, "NUL"),
    ("nul-in-name", {"name": "a\x00b"}, "NUL"),
    ("nul-in-id", {"name": "a", "id": "order\x00"}, "NUL"),
    ("nul-in-user-key", {"name": "a", "user": {"\x00": 1}}, "NUL"),
    ("nul-in-v", {"name": "a", "v": "\x00"}, "NUL"),
    ("lone-surrogate-in-data", b'{"name": "a", "data": {"x": "\\ud800"}}', "surrogate"),
    ("lone-surrogate-in-key", b'{"name": "a", "data": {"\\udfff": 1}}', "surrogate"),
    ("lone-surrogate-in-name", b'{"name": "a\\ud83d"}', "surrogate"),
    ("overflowing-number-in-data", b'{"name": "a", "data": {"x": 1e400}}', "number"),
    ("overflowing-number-in-list", b'{"name": "a", "data": {"x": [1, -2e999]}}', "number"),
    ("int-beyond-double-range", b'{"name": "a", "data": {"x": 1' + b"0" * 400 + b"}}", "number"),
    ("nested-too-deep-for-later-stages", deeply_nested(200), "nested deeper than 128"),
    ("nested-just-too-deep", deeply_nested(127), "nested deeper than 128"),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [(b, f) for _, b, f in BAD_EVENTS], ids=[name for name, _, _ in BAD_EVENTS]
)
async def test_bad_event_is_400_and_nothing_is_stored(shared_api: Api, body: Any, fragment: str) -> None:
    api = shared_api
    try:
        resp = await post(api, body)
        assert_error(resp, 400, fragment)
        # The same event inside an array after a valid one: the request is all or nothing.
        if not isinstance(body, bytes):
            resp = await post(api, [{"name": "shop/ok", "data": {}}, body])
            assert_error(resp, 400, "event 1", fragment)
        assert await api.counts() == NOTHING
    finally:  # keep one failure from cascading into the next cases of the shared database
        await api.execute("TRUNCATE pgqueue.events, pgqueue.event_inbox, pgqueue.event_dedupe")


async def test_one_valid_and_one_invalid_event_store_nothing(api: Api) -> None:
    resp = await post(
        api,
        [
            {"name": "shop/order.created", "data": {"n": 1}, "id": "o-1"},
            {"name": "shop/order.created", "data": "not an object"},
        ],
    )
    message = assert_error(resp, 400, "event 1", "`data`")
    assert "event 0" not in message
    assert await api.counts() == NOTHING
    # The valid event alone is fine afterwards: nothing (not even its `id`) was remembered.
    resp = await post(api, [{"name": "shop/order.created", "data": {"n": 1}, "id": "o-1"}])
    assert resp.status_code == 200
    assert await api.counts() == {"events": 1, "event_inbox": 1, "event_dedupe": 1}


async def test_deep_but_reasonable_nesting_is_accepted(api: Api) -> None:
    resp = await post(api, deeply_nested(126))  # event → data → 126 lists = 128 levels
    assert resp.status_code == 200, resp.text
    big = await post(api, b'{"name": "a", "data": {"big": 123456789012345678901234567890, "f": 1e308}}')
    assert big.status_code == 200, big.text
    assert (await api.counts())["events"] == 2


async def test_oversize_event_is_413_and_nothing_is_stored(make_api: ApiFactory) -> None:
    api = await make_api(max_event_bytes=1024)
    small = {"name": "shop/small", "data": {"blob": "x" * 100}}
    big = {"name": "shop/big", "data": {"blob": "x" * 2000}}
    assert_error(await post(api, big), 413, "event 0", "the limit is 1024 bytes")
    assert_error(await post(api, [small, small, big]), 413, "event 2", "1024")
    # The limit counts UTF-8 bytes, not characters: 600 times "é" is 1200 bytes.
    assert_error(await post(api, {"name": "shop/accents", "data": {"s": "é" * 600}}), 413, "1024")
    assert await api.counts() == NOTHING
    resp = await post(api, [small, {"name": "shop/accents", "data": {"s": "é" * 300}}])
    assert resp.status_code == 200, resp.text
    assert await api.counts() == {"events": 2, "event_inbox": 2, "event_dedupe": 0}


async def test_oversize_request_body_is_413(make_api: ApiFactory) -> None:
    api = await make_api(max_event_bytes=1024)
    limit = 16 * 1024 * 1024  # the request cap never goes below 16 MiB
    blob = b'[{"name": "a", "data": {"s": "' + b"x" * limit + b'"}}]'
    assert_error(await post(api, blob), 413, "limit")
    assert await api.counts() == NOTHING


async def test_too_many_events_is_413(make_api: ApiFactory) -> None:
    api = await make_api(max_events_per_request=3)
    event = {"name": "shop/order.created", "data": {}}
    assert_error(await post(api, [event] * 4), 413, "4 events", "the limit is 3")
    assert await api.counts() == NOTHING
    resp = await post(api, [event] * 3)
    assert resp.status_code == 200
    assert len(resp.json()["ids"]) == 3


async def test_default_limit_is_5000_events_per_request(api: Api) -> None:
    event = {"name": "shop/order.created"}
    assert_error(await post(api, [event] * 5001), 413, "5001 events", "the limit is 5000")
    assert await api.counts() == NOTHING
    resp = await post(api, [event] * 5000)
    assert resp.status_code == 200
    assert len(set(resp.json()["ids"])) == 5000
    assert await api.counts() == {"events": 5000, "event_inbox": 5000, "event_dedupe": 0}


async def test_serve_mode_refuses_an_unknown_event_key(serve_api: Api) -> None:
    for key in ("wrong-key", EVENT_KEY[:-1], EVENT_KEY + "x", EVENT_KEY.upper()):
        resp = await post(serve_api, {"name": "shop/order.created"}, key=key)
        assert resp.status_code == 401
        assert resp.json() == {"error": "Event key not found", "status": 401}
    # A bad key is refused before the body is even read.
    resp = await post(serve_api, b"not json", key="wrong-key")
    assert resp.json() == {"error": "Event key not found", "status": 401}
    assert await serve_api.counts() == NOTHING
    resp = await post(serve_api, {"name": "shop/order.created"}, key=EVENT_KEY)
    assert resp.status_code == 200, resp.text
    assert await serve_api.counts() == {"events": 1, "event_inbox": 1, "event_dedupe": 0}


async def test_an_empty_event_key_is_any_key_in_dev_and_a_wrong_one_in_production(
    api: Api, serve_api: Api
) -> None:
    """The Python SDK with INNGEST_EVENT_KEY="" posts to /e/ (step.send_event, client.send)."""
    resp = await post(api, {"name": "shop/order.created"}, key="")
    assert resp.status_code == 200 and len(resp.json()["ids"]) == 1, resp.text
    resp = await post(serve_api, {"name": "shop/order.created"}, key="")
    assert resp.status_code == 401 and resp.json() == {"error": "Event key not found", "status": 401}
    assert (await serve_api.counts())["events"] == 1  # the dev server's only (one database)


async def test_valid_events_are_stored_in_order_with_their_ids(api: Api) -> None:
    sent = [
        {
            "name": "shop/a",
            "data": {"n": 1},
            "user": {"email": "x@example.com"},
            "v": "2024-01-01.1",
            "ts": 1_700_000_000_123,
        },
        {"name": "shop/b", "data": {"n": 2}},
        {"name": "shop/c"},
    ]
    resp = await post(api, sent)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"ids", "status"} and body["status"] == 200
    event_ids = body["ids"]
    assert len(event_ids) == 3 and len(set(event_ids)) == 3
    for event_id in event_ids:
        ids.ulid_time_ms(event_id)  # a ULID
    rows = {r["id"]: r for r in await api.rows("SELECT * FROM pgqueue.events")}
    assert [rows[i]["name"] for i in event_ids] == ["shop/a", "shop/b", "shop/c"]
    first = rows[event_ids[0]]
    assert (first["data"], first["user"], first["v"], first["ts"]) == (
        {"n": 1},
        {"email": "x@example.com"},
        "2024-01-01.1",
        1_700_000_000_123,
    )
    inbox = await api.rows("SELECT event_id FROM pgqueue.event_inbox ORDER BY seq")
    assert [r["event_id"] for r in inbox] == event_ids
    # The REST API reads them back.
    resp = await api.client.get(f"/v1/events/{event_ids[1]}")
    assert resp.status_code == 200
    assert resp.json()["data"]["name"] == "shop/b"


async def test_single_object_body_and_defaults_are_filled(api: Api) -> None:
    before = int(time.time() * 1000)
    resp = await post(api, {"name": "shop/defaults", "data": None})
    assert resp.status_code == 200, resp.text
    resp2 = await post(api, {"name": "shop/ts-zero", "ts": 0})
    resp3 = await post(api, {"name": "shop/ts-float", "ts": 1_700_000_000_000.0, "id": ""})
    after = int(time.time() * 1000)
    rows = {r["name"]: r for r in await api.rows("SELECT * FROM pgqueue.events")}
    assert rows["shop/defaults"]["data"] == {}
    assert rows["shop/defaults"]["user"] is None
    assert before <= rows["shop/defaults"]["ts"] <= after
    assert before <= rows["shop/ts-zero"]["ts"] <= after
    assert rows["shop/ts-float"]["ts"] == 1_700_000_000_000
    assert rows["shop/ts-float"]["external_id"] is None  # an empty id is no id
    assert [r.json()["ids"][0] for r in (resp, resp2, resp3)] == [
        rows[n]["id"] for n in ("shop/defaults", "shop/ts-zero", "shop/ts-float")
    ]


async def test_sessions_are_stored_resolved_and_read_back(api: Api) -> None:
    resp = await post(api, [
        {"name": "chat/message", "meta": {"sessions": {"conversation": "c-1", "cut": None, "n": 7},
                                          "propagated_sessions": {"conversation": "parent", "user": "alice",
                                                                  "cut": "inherited"}}},
        {"name": "chat/message", "meta": {"sessions": None, "propagated_sessions": {"user": "alice"}}},
        {"name": "chat/message", "meta": {}},
    ])
    assert resp.status_code == 200, resp.text
    first, cleared, empty = resp.json()["ids"]
    rows = {r["id"]: r for r in await api.rows("SELECT id, sessions FROM pgqueue.events")}
    assert rows[first]["sessions"] == {"conversation": "c-1", "n": "7", "user": "alice"}
    assert rows[cleared]["sessions"] is None
    assert rows[empty]["sessions"] is None
    resp = await api.client.get(f"/v1/events/{first}")
    assert resp.json()["data"]["sessions"] == {"conversation": "c-1", "n": "7", "user": "alice"}


def seed_header(millis: int = 1_700_000_000_000, entropy: bytes = bytes(range(10))) -> dict[str, str]:
    return {"x-inngest-event-id-seed": f"{millis},{base64.b64encode(entropy).decode()}"}


async def test_seeded_request_retried_gives_the_same_ids_and_one_copy(api: Api) -> None:
    events = [{"name": "shop/order.created", "data": {"n": 1}}, {"name": "shop/order.paid", "data": {"n": 1}}]
    first = await post(api, events, headers=seed_header())
    retry = await post(api, events, headers=seed_header())
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()
    seed = ids.parse_event_id_seed(seed_header()["x-inngest-event-id-seed"])
    assert seed is not None
    assert first.json()["ids"] == ids.seeded_ulids(seed, 2)
    assert await api.counts() == {"events": 2, "event_inbox": 2, "event_dedupe": 0}
    # Another seed is another request.
    other = await post(api, events, headers=seed_header(entropy=bytes(range(1, 11))))
    assert set(other.json()["ids"]).isdisjoint(first.json()["ids"])
    assert (await api.counts())["events"] == 4


async def test_seeded_retry_of_an_event_with_a_user_id_is_not_flagged_duplicate(api: Api) -> None:
    events = [{"name": "shop/order.created", "id": "order-7"}]
    first = await post(api, events, headers=seed_header())
    retry = await post(api, events, headers=seed_header())
    assert first.json() == retry.json()
    rows = await api.rows("SELECT id, skip_reason FROM pgqueue.events")
    assert rows == [{"id": first.json()["ids"][0], "skip_reason": None}]
    assert await api.counts() == {"events": 1, "event_inbox": 1, "event_dedupe": 1}


async def test_malformed_seed_falls_back_to_random_ids(api: Api) -> None:
    events = [{"name": "shop/order.created"}]
    for header in ("nonsense", "0,AAAAAAAAAAAAAA==", "1700000000000,AAAA", "1700000000000,!!!"):
        r1 = await post(api, events, headers={"x-inngest-event-id-seed": header})
        r2 = await post(api, events, headers={"x-inngest-event-id-seed": header})
        assert r1.status_code == r2.status_code == 200
        assert r1.json()["ids"] != r2.json()["ids"]
    assert (await api.counts())["events"] == 8


async def sync_function(api: Api, event: str = "shop/order.created") -> None:
    resp = await api.client.post(
        "/fn/register", json=register_body(function("shop-on-order", {"event": event}))
    )
    assert resp.status_code == 200, resp.text


async def run_count(api: Api) -> int:
    rows = await api.rows("SELECT count(*) AS n FROM pgqueue.runs")
    return int(rows[0]["n"])


async def test_duplicate_user_id_is_acknowledged_but_triggers_nothing(api: Api) -> None:
    await sync_function(api)
    runner = Runner(api.app.state.pool, wakeup=Wakeup())
    first = await post(api, {"name": "shop/order.created", "id": "order-1", "data": {"n": 1}})
    second = await post(api, {"name": "shop/order.created", "id": "order-1", "data": {"n": 2}})
    assert first.status_code == second.status_code == 200
    first_id, second_id = first.json()["ids"][0], second.json()["ids"][0]
    assert first_id != second_id
    rows = {r["id"]: r for r in await api.rows("SELECT * FROM pgqueue.events")}
    assert rows[first_id]["skip_reason"] is None
    assert "duplicate" in rows[second_id]["skip_reason"]
    assert rows[second_id]["external_id"] == "order-1"
    inbox = await api.rows("SELECT event_id FROM pgqueue.event_inbox")
    assert inbox == [{"event_id": first_id}]
    tick = await runner.drain()
    assert (tick.events_seen, tick.runs_created) == (1, 1)
    runs = await api.rows("SELECT event_id FROM pgqueue.runs")
    assert runs == [{"event_id": first_id}]
    # The REST view says why the duplicate started nothing.
    resp = await api.client.get(f"/v1/events/{second_id}")
    assert "duplicate" in resp.json()["data"]["skip_reason"]


async def test_duplicate_user_ids_within_one_request(api: Api) -> None:
    resp = await post(
        api,
        [
            {"name": "shop/a", "id": "same"},
            {"name": "shop/b", "id": "same"},
            {"name": "shop/c", "id": "other"},
        ],
    )
    assert resp.status_code == 200
    event_ids = resp.json()["ids"]
    rows = {r["id"]: r for r in await api.rows("SELECT * FROM pgqueue.events")}
    assert [rows[i]["skip_reason"] is None for i in event_ids] == [True, False, True]
    inbox = await api.rows("SELECT event_id FROM pgqueue.event_inbox ORDER BY seq")
    assert [r["event_id"] for r in inbox] == [event_ids[0], event_ids[2]]


async def test_user_id_can_be_reused_after_24_hours(api: Api) -> None:
    await post(api, {"name": "shop/a", "id": "order-9"})
    await api.execute("UPDATE pgqueue.event_dedupe SET expires_at = now() - interval '1 second'")
    resp = await post(api, {"name": "shop/a", "id": "order-9"})
    assert resp.status_code == 200
    rows = await api.rows("SELECT skip_reason FROM pgqueue.events")
    assert [r["skip_reason"] for r in rows] == [None, None]
    assert await api.counts() == {"events": 2, "event_inbox": 2, "event_dedupe": 1}
    dedupe = await api.rows("SELECT event_id FROM pgqueue.event_dedupe")
    assert dedupe == [{"event_id": resp.json()["ids"][0]}]


def random_wide_text(n: int) -> str:
    """n random characters of 3 UTF-8 bytes each from a 20,000-code-point range: incompressible."""
    return "".join(chr(0x4E00 + secrets.randbelow(20_000)) for _ in range(n))


@pytest.mark.parametrize("long_id", [
    pytest.param(lambda: secrets.token_hex(512), id="1024-hex-chars"),
    pytest.param(lambda: random_wide_text(1024), id="1024-chars-3072-bytes"),
])
async def test_a_long_user_id_is_stored_and_still_dedupes(api: Api, long_id: Any) -> None:
    # Up to 1,024 characters are accepted; 1,024 three-byte characters are past a btree entry's
    # limit, so the window is keyed by a digest of the id, not the id itself.
    await sync_function(api)
    event_id = long_id()
    first = await post(api, {"name": "shop/order.created", "id": event_id, "data": {"n": 1}})
    assert first.status_code == 200, first.text
    second = await post(api, {"name": "shop/order.created", "id": event_id, "data": {"n": 2}})
    assert second.status_code == 200, second.text
    healthy = await post(api, {"name": "shop/order.created", "data": {"n": 3}})
    rows = {r["id"]: r for r in await api.rows("SELECT * FROM pgqueue.events")}
    assert rows[first.json()["ids"][0]]["external_id"] == event_id  # the sender's id, as sent
    assert "duplicate" in rows[second.json()["ids"][0]]["skip_reason"]
    tick = await Runner(api.app.state.pool, wakeup=Wakeup()).drain()
    assert (tick.events_seen, tick.runs_created) == (2, 2)
    started = {r["event_id"] for r in await api.rows("SELECT event_id FROM pgqueue.runs")}
    assert started == {first.json()["ids"][0], healthy.json()["ids"][0]}
    resp = await api.client.get(f"/v1/events/{first.json()['ids'][0]}")
    assert resp.json()["data"]["id"] == event_id


async def test_an_id_of_8000_random_characters_is_a_clear_400(api: Api) -> None:
    resp = await post(api, {"name": "shop/order.created", "id": secrets.token_hex(4000)})
    assert_error(resp, 400, "event 0", "`id` is longer than 1024 characters")
    assert await api.counts() == NOTHING
