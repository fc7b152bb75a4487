"""POST /fn/register: validation with messages naming the function and field, nothing stored on
error, case-insensitive keys, and re-sync archiving removed functions."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from tests.api.conftest import (
    APP_TABLES,
    BEARER,
    SIGNING_KEY,
    Api,
    ApiFactory,
    assert_error,
    function,
    register_body,
)

NOTHING = dict.fromkeys(APP_TABLES, 0)


async def register(api: Api, body: Any, headers: dict[str, str] | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await api.client.post(
        "/fn/register", content=content, headers={"content-type": "application/json", **(headers or {})}
    )


def with_fn(**extra: Any) -> dict[str, Any]:
    return register_body(function("shop-fn", **extra))


def with_triggers(*triggers: dict[str, Any]) -> dict[str, Any]:
    return register_body(function("shop-fn", *triggers))


BAD_REGISTRATIONS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("not-json", b"{'appName': 'shop'", ("not valid JSON",)),
    ("empty-body", b"", ("not valid JSON",)),
    ("too-deep-to-parse", b"[" * 100_000 + b"]" * 100_000, ("not valid JSON",)),
    (
        "nested-too-deep",
        {"appName": "shop", "url": "http://h", "functions": [], "x": json.loads("[" * 500 + "]" * 500)},
        ("nested deeper",),
    ),
    ("array-body", [register_body()], ("JSON object",)),
    ("missing-app-name", {"url": "http://h/api", "functions": []}, ("`appname` is required",)),
    ("empty-app-name", register_body(app=""), ("must not be empty",)),
    ("missing-url", {"appName": "shop", "functions": []}, ("`url` is required",)),
    ("url-not-http", register_body(url="ftp://h/api"), ("http(s)", "ftp://h/api")),
    ("functions-missing", {"appName": "shop", "url": "http://h/api"}, ("`functions` must be a list",)),
    ("functions-object", {**register_body(), "functions": {"id": "f"}}, ("`functions` must be a list",)),
    ("functions-string", {**register_body(), "functions": "f"}, ("`functions` must be a list",)),
    ("function-not-object", register_body("f"), ("function #0 must be an object",)),  # type: ignore[arg-type]
    ("function-without-id", register_body({"name": "f"}), ("function #0", "`id` is required")),
    ("function-empty-id", register_body(function("")), ("function #0", "must not be empty")),
    ("function-id-not-string", register_body(function(5)), ("function #0", "`id` must be a string")),  # type: ignore[arg-type]
    (
        "duplicate-ids",
        register_body(function("shop-a"), function("shop-b"), function("shop-a")),
        ("unique", "'shop-a'"),
    ),
    (
        "bad-trigger-expression",
        with_triggers({"event": "shop/order.created", "expression": "event.data.plan =="}),
        ("function 'shop-fn'", "event.data.plan =="),
    ),
    (
        "trigger-expression-not-string",
        with_triggers({"event": "shop/a", "expression": 5}),
        ("function 'shop-fn'", "expression must be a string"),
    ),
    ("trigger-not-object", with_triggers("shop/a"), ("function 'shop-fn' trigger #0",)),  # type: ignore[arg-type]
    (
        "trigger-both-event-and-cron",
        with_triggers({"event": "shop/a", "cron": "* * * * *"}),
        ("exactly one of `event` or `cron`",),
    ),
    ("trigger-neither", with_triggers({"expression": "true"}), ("exactly one of `event` or `cron`",)),
    ("trigger-empty-event", with_triggers({"event": ""}), ("1..512",)),
    ("trigger-bad-wildcard", with_triggers({"event": "shop*orders"}), ("wildcard",)),
    ("triggers-not-list", with_fn(triggers="shop/a"), ("triggers must be a list",)),
    ("duplicate-trigger", with_triggers({"event": "shop/a"}, {"event": "shop/a"}), ("duplicate trigger",)),
    (
        "bad-cron-words",
        with_triggers({"cron": "every day"}),
        ("function 'shop-fn'", "invalid cron 'every day'"),
    ),
    ("bad-cron-range", with_triggers({"cron": "61 * * * *"}), ("invalid cron '61 * * * *'",)),
    ("bad-cron-six-fields", with_triggers({"cron": "0 * * * * *"}), ("invalid cron",)),
    ("bad-cron-time-zone", with_triggers({"cron": "TZ=Mars/Olympus 0 9 * * *"}), ("unknown time zone",)),
    ("cron-jitter-too-long", with_triggers({"cron": "* * * * *", "jitter": "10m"}), ("between 1s and 5m",)),
    ("cron-jitter-zero", with_triggers({"cron": "* * * * *", "jitter": "0s"}), ("between 1s and 5m",)),
    ("cron-jitter-bad", with_triggers({"cron": "* * * * *", "jitter": "soon"}), ("jitter", "'soon'")),
    ("event-trigger-jitter", with_triggers({"event": "shop/a", "jitter": "5s"}), ("cron triggers only",)),
    (
        "duplicate-cron-other-jitter",
        with_triggers({"cron": "0 * * * *", "jitter": "5s"}, {"cron": "0 * * * *", "jitter": "9s"}),
        ("duplicate trigger",),
    ),
    (
        "eleven-triggers",
        with_triggers(*({"event": f"shop/e{i}"} for i in range(11))),
        ("function 'shop-fn'", "at most 10 triggers"),
    ),
    (
        "three-concurrency-limits",
        with_fn(concurrency=[{"limit": 1}, {"limit": 2}, {"limit": 3}]),
        ("function 'shop-fn'", "at most 2 concurrency"),
    ),
    ("concurrency-not-number", with_fn(concurrency="5"), ("concurrency must be",)),
    ("concurrency-negative", with_fn(concurrency={"limit": -1}), ("limit must be at least 1",)),
    # never silently unlimited: a zero, missing or unreadable limit is refused, not skipped
    ("concurrency-zero", with_fn(concurrency={"limit": 0}), ("concurrency[0] limit must be at least 1",)),
    ("concurrency-number-zero", with_fn(concurrency=0), ("concurrency[0] limit must be at least 1",)),
    ("concurrency-missing-limit", with_fn(concurrency={"key": "event.data.id"}), ("`limit` is required",)),
    ("concurrency-fraction", with_fn(concurrency=[{"limit": 1.5}]), ("limit must be an integer",)),
    ("concurrency-huge", with_fn(concurrency=10**12), ("limit must be at most 100000",)),
    (
        "concurrency-fn-step",
        with_fn(concurrency={"fn": [{"limit": 1}], "step": [{"limit": 5, "key": "event.data.id"}]}),
        ("function 'shop-fn'", "concurrency {fn, step}", "not supported"),
    ),
    ("concurrency-step-only", with_fn(concurrency={"step": [{"limit": 5}]}), ("concurrency {fn, step}",)),
    (
        "concurrency-unknown-field",
        with_fn(concurrency=[{"limit": 2, "keys": "event.data.id"}]),
        ("concurrency[0]", "unknown field 'keys'", "`limit`, `key`, `scope`"),
    ),
    ("concurrency-list-of-numbers", with_fn(concurrency=[5]), ("concurrency[0] must be an object",)),
    (
        "concurrency-env-without-key",
        with_fn(concurrency={"limit": 5, "scope": "env"}),
        ("concurrency[0]", "`key` is required", "'env'"),
    ),
    ("concurrency-bad-scope", with_fn(concurrency={"limit": 1, "scope": "galaxy"}), ("scope",)),
    (
        "concurrency-bad-key",
        with_fn(concurrency={"limit": 1, "key": "event.data.id +"}),
        ("concurrency[0] key", "event.data.id +"),
    ),
    (
        "concurrency-infinite",
        b'{"appName": "shop", "url": "http://h", "functions": [{"id": "f", "concurrency": 1e400}]}',
        ("number too large",),
    ),
    (
        "retries-nan",
        b'{"appName": "shop", "url": "http://h", "functions": [{"id": "f", "retries": NaN}]}',
        ("NaN",),
    ),
    (
        "retries-fraction",
        register_body(function("shop-fn", steps={"step": {"retries": {"attempts": 1.5}}})),
        ("retries must be an integer",),
    ),
    (
        "throttle-bad-period",
        with_fn(throttle={"limit": 1, "period": "abc"}),
        ("function 'shop-fn' throttle period", "invalid duration 'abc'"),
    ),
    ("throttle-missing-period", with_fn(throttle={"limit": 1}), ("throttle period is required",)),
    ("throttle-missing-limit", with_fn(throttle={"period": "1s"}), ("throttle limit is required",)),
    (
        "throttle-zero-limit",
        with_fn(throttle={"limit": 0, "period": "1s"}),
        ("throttle limit must be at least 1",),
    ),
    (
        "throttle-zero-period",
        with_fn(throttle={"limit": 1, "period": "0s"}),
        ("throttle period", "minimum of 1s"),
    ),
    (
        "throttle-long-period",
        with_fn(throttle={"limit": 1, "period": "8d"}),
        ("throttle period", "maximum of 7d"),
    ),
    (
        "throttle-negative-burst",
        with_fn(throttle={"limit": 1, "period": "1s", "burst": -1}),
        ("throttle burst must be at least 0",),
    ),
    (
        "throttle-unknown-field",
        with_fn(throttle={"limit": 1, "period": "1s", "burts": 3}),
        ("function 'shop-fn' throttle", "unknown field 'burts'", "`burst`"),
    ),
    (
        "ratelimit-zero-limit",
        with_fn(rateLimit={"limit": 0, "period": "1h"}),
        ("rateLimit limit must be at least 1",),
    ),
    ("ratelimit-missing-limit", with_fn(rateLimit={"period": "1h"}), ("rateLimit limit is required",)),
    ("ratelimit-short-period", with_fn(rateLimit={"limit": 1, "period": "500ms"}), ("minimum of 1s",)),
    (
        "ratelimit-long-period",
        with_fn(rateLimit={"limit": 1, "period": "25h"}),
        ("rateLimit period", "maximum of 1d"),
    ),
    ("debounce-short-period", with_fn(debounce={"period": "0s"}), ("debounce period", "minimum of 1s")),
    ("debounce-long-period", with_fn(debounce={"period": "8d"}), ("debounce period", "maximum of 7d")),
    ("debounce-unknown-field", with_fn(debounce={"period": "5s", "max": "1m"}), ("unknown field 'max'",)),
    ("batch-missing-size", with_fn(batchEvents={"timeout": "5s"}), ("batchEvents maxSize is required",)),
    ("batch-size-one", with_fn(batchEvents={"maxSize": 1, "timeout": "5s"}), ("maxSize must be at least 2",)),
    (
        "batch-size-fraction",
        with_fn(batchEvents={"maxSize": 2.5, "timeout": "5s"}),
        ("maxSize must be an integer",),
    ),
    ("batch-short-timeout", with_fn(batchEvents={"maxSize": 5, "timeout": "500ms"}), ("minimum of 1s",)),
    ("priority-unknown-field", with_fn(priority={"run": "1", "fn": "2"}), ("priority", "unknown field 'fn'")),
    ("timeouts-unknown-field", with_fn(timeouts={"starts": "1m"}), ("timeouts", "unknown field 'starts'")),
    ("singleton-mode-not-string", with_fn(singleton={"mode": 1}), ("singleton mode must be a string",)),
    ("ratelimit-bad-period", with_fn(rateLimit={"limit": 1, "period": "1 hour"}), ("rateLimit period",)),
    ("debounce-negative", with_fn(debounce={"period": "-5s"}), ("debounce period", "negative")),
    ("batch-bad-timeout", with_fn(batchEvents={"maxSize": 10, "timeout": "1x"}), ("timeout", "'1x'")),
    ("timeouts-bad-finish", with_fn(timeouts={"finish": "soon"}), ("timeouts finish", "'soon'")),
    (
        "cancel-bad-timeout",
        with_fn(cancel=[{"event": "shop/cancelled", "timeout": "soon"}]),
        ("cancel[0] timeout", "'soon'"),
    ),
    (
        "cancel-bad-if",
        with_fn(cancel=[{"event": "shop/cancelled", "if": "event.data.id =="}]),
        ("cancel[0] if",),
    ),
    ("cancel-six", with_fn(cancel=[{"event": "shop/c"}] * 6), ("at most 5",)),
    ("singleton-bad-mode", with_fn(singleton={"mode": "sometimes"}), ("singleton",)),
    ("priority-bad-expression", with_fn(priority={"run": "event.data.vip ?"}), ("priority run",)),
    ("idempotency-bad-expression", with_fn(idempotency="event.data.id =="), ("idempotency",)),
    (
        "runtime-url-not-http",
        register_body(function("shop-fn", steps={"step": {"runtime": {"url": "ftp://x"}}})),
        ("runtime url",),
    ),
    ("nul-in-function-name", with_fn(name="shop\x00fn"), ("NUL",)),
    ("nul-in-trigger-event", with_triggers({"event": "shop/\x00"}), ("NUL",)),
    ("lone-surrogate", b'{"appName": "shop\\ud800", "url": "http://h", "functions": []}', ("surrogate",)),
    # Names that end up in unique (btree) indexes are bounded here, not by the index's size limit.
    ("app-name-too-long", register_body(app=secrets.token_hex(4000)), ("app", "longer than 256")),
    (
        "function-id-too-long",
        register_body(function(secrets.token_hex(4000))),
        ("function #0", "longer than 256"),
    ),
    ("cancel-event-too-long", with_fn(cancel=[{"event": secrets.token_hex(4000)}]), ("cancel[0]", "1..512")),
    (
        "cron-too-long",
        with_triggers({"cron": ",".join(["0"] * 2000) + " * * * *"}),
        ("cron", "longer than 256"),
    ),
]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [(b, f) for _, b, f in BAD_REGISTRATIONS],
    ids=[name for name, _, _ in BAD_REGISTRATIONS],
)
async def test_bad_registration_is_400_and_nothing_is_stored(
    shared_api: Api, body: Any, fragments: tuple[str, ...]
) -> None:
    try:
        assert_error(await register(shared_api, body), 400, *fragments)
        assert await shared_api.counts(APP_TABLES) == NOTHING
    finally:  # keep one failure from cascading into the next cases of the shared database
        await shared_api.execute("TRUNCATE pgqueue.apps CASCADE")


async def test_wrong_expected_server_kind_is_400(shared_api: Api) -> None:
    resp = await register(
        shared_api, register_body(function("shop-fn")), headers={"x-inngest-expected-server-kind": "cloud"}
    )
    assert_error(resp, 400, "server kind", "'cloud'", "'dev'")
    assert await shared_api.counts(APP_TABLES) == NOTHING


async def test_expected_server_kind_that_matches_is_accepted(api: Api) -> None:
    resp = await register(
        api, register_body(function("shop-fn")), headers={"x-inngest-expected-server-kind": "dev"}
    )
    assert resp.status_code == 200, resp.text


async def test_failed_resync_leaves_the_previous_registration_untouched(api: Api) -> None:
    assert (await register(api, register_body(function("shop-a"), function("shop-b")))).status_code == 200
    before = await api.rows("SELECT slug, config, archived_at FROM pgqueue.functions ORDER BY slug")
    bad = register_body(function("shop-a", {"event": "shop/x", "expression": "event.data.plan =="}))
    assert_error(await register(api, bad), 400, "function 'shop-a'")
    assert await api.rows("SELECT slug, config, archived_at FROM pgqueue.functions ORDER BY slug") == before
    assert all(r["archived_at"] is None for r in before)


@pytest.mark.parametrize("app_key", ["appname", "AppName", "appName", "APPNAME"])
async def test_keys_match_case_insensitively(api: Api, app_key: str) -> None:
    body = register_body(
        function("shop-fn", BatchEvents={"MaxSize": 5, "Timeout": "2s"}, Concurrency={"Limit": 3}),
        app_key=app_key,
    )
    resp = await register(api, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == 200 and resp.json()["modified"] is True
    resp = await api.client.get("/v1/apps/shop/functions")
    assert resp.status_code == 200
    [fn] = resp.json()["data"]
    assert fn["slug"] == "shop-fn"
    assert fn["config"]["batchEvents"] == {"maxSize": 5, "timeout": "2s"}
    assert fn["config"]["concurrency"] == [{"limit": 3, "scope": "fn"}]


async def test_flow_control_settings_within_bounds_are_stored_as_given(api: Api) -> None:
    settings = {
        "concurrency": [
            {"limit": 100_000, "key": "event.data.user"},
            {"limit": 5, "scope": "env", "key": "'db'"},
        ],
        "throttle": {"limit": 10, "period": "7d", "burst": 0, "key": "event.data.user"},  # 0: default 1
        "rateLimit": {"limit": 1, "period": "24h", "key": "event.data.user"},
        "debounce": {"period": "1s", "timeout": "1m"},
        "priority": {"run": "event.data.vip ? 60 : 0"},
        "timeouts": {"start": "10s", "finish": "1h"},
    }
    batched = {"batchEvents": {"maxSize": 2, "timeout": "1s", "key": "event.data.user"}}
    body = register_body(function("shop-flow", **settings), function("shop-batch", **batched))
    resp = await register(api, body)
    assert resp.status_code == 200, resp.text
    fns = {r["slug"]: r["config"] for r in await api.rows("SELECT slug, config FROM pgqueue.functions")}
    assert fns["shop-flow"]["concurrency"] == [
        {"limit": 100_000, "key": "event.data.user", "scope": "fn"},
        {"limit": 5, "key": "'db'", "scope": "env"},
    ]
    for name in ("throttle", "rateLimit", "debounce", "priority", "timeouts"):
        assert fns["shop-flow"][name] == settings[name], name
    assert fns["shop-batch"]["batchEvents"] == batched["batchEvents"]


async def test_cron_jitter_is_stored_with_its_trigger(api: Api) -> None:
    triggers = [{"cron": "TZ=Europe/Paris 0 * * * *", "jitter": "30s"}, {"cron": "*/5 * * * *"}]
    resp = await register(api, register_body(function("shop-hourly", *triggers)))
    assert resp.status_code == 200, resp.text
    [config] = [r["config"] for r in await api.rows("SELECT config FROM pgqueue.functions")]
    assert config["triggers"] == triggers


async def test_valid_registration_is_stored_with_triggers(api: Api) -> None:
    body = register_body(
        function(
            "shop-on-order",
            {"event": "shop/order.created", "expression": "event.data.plan == 'pro'"},
            {"event": "shop/*"},
            retries=7,
        ),
        function(
            "shop-nightly",
            {"cron": "TZ=Europe/Paris 0 3 * * *"},
            cancel=[{"event": "shop/stop", "timeout": "1h"}],
        ),
    )
    resp = await register(api, body)
    assert resp.status_code == 200, resp.text
    triggers = await api.rows(
        "SELECT f.slug, t.event_name, t.name_prefix, t.expression, t.cron FROM pgqueue.function_triggers t"
        " JOIN pgqueue.functions f ON f.id = t.function_id ORDER BY f.slug, t.position"
    )
    assert triggers == [
        {
            "slug": "shop-nightly",
            "event_name": None,
            "name_prefix": None,
            "expression": None,
            "cron": "TZ=Europe/Paris 0 3 * * *",
        },
        {
            "slug": "shop-on-order",
            "event_name": "shop/order.created",
            "name_prefix": None,
            "expression": "event.data.plan == 'pro'",
            "cron": None,
        },
        {
            "slug": "shop-on-order",
            "event_name": None,
            "name_prefix": "shop/",
            "expression": None,
            "cron": None,
        },
    ]
    fns = {r["slug"]: r for r in await api.rows("SELECT slug, retries, config FROM pgqueue.functions")}
    assert fns["shop-on-order"]["retries"] == 3  # the step's retries.attempts wins over the function's
    assert fns["shop-nightly"]["config"]["cancel"] == [{"event": "shop/stop", "timeout": "1h"}]


async def test_resync_archives_a_removed_function_and_restores_it_when_it_returns(api: Api) -> None:
    both = register_body(function("shop-a"), function("shop-b"))
    assert (await register(api, both)).json()["modified"] is True
    same = await register(api, both)
    assert same.status_code == 200 and same.json()["modified"] is False

    resp = await register(api, register_body(function("shop-a")))
    assert resp.status_code == 200 and resp.json()["modified"] is True
    active = (await api.client.get("/v1/apps/shop/functions")).json()["data"]
    assert [f["slug"] for f in active] == ["shop-a"]
    listed = (await api.client.get("/v1/apps/shop/functions", params={"include_archived": "true"})).json()[
        "data"
    ]
    assert {f["slug"]: f["archived"] for f in listed} == {"shop-a": False, "shop-b": True}
    # An archived function is no longer a trigger candidate: its events start nothing.
    rows = await api.rows(
        "SELECT slug, archived_at IS NOT NULL AS archived FROM pgqueue.functions ORDER BY slug"
    )
    assert rows == [{"slug": "shop-a", "archived": False}, {"slug": "shop-b", "archived": True}]

    assert (await register(api, both)).status_code == 200
    rows = await api.rows(
        "SELECT slug, archived_at IS NOT NULL AS archived FROM pgqueue.functions ORDER BY slug"
    )
    assert rows == [{"slug": "shop-a", "archived": False}, {"slug": "shop-b", "archived": False}]
    assert (await api.counts(APP_TABLES)) == {"apps": 1, "functions": 2, "function_triggers": 2}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "request body is not valid JSON"),
        (b"{}", "url"),
        (b'{"url": 5}', "url"),
        (b'{"url": "ftp://shop.example/api/inngest"}', "http:// or https://"),
    ],
)
async def test_bad_sync_by_url_request_is_400(shared_api: Api, content: bytes, fragment: str) -> None:
    resp = await shared_api.client.post(
        "/v1/apps/sync", content=content, headers={"content-type": "application/json"}
    )
    assert_error(resp, 400, fragment)
    assert await shared_api.counts(APP_TABLES) == NOTHING


# -- egress: forbidden app URLs are refused at sync; a sync never reads a service for its caller ------

PROD = {"mode": "serve", "signing_key": SIGNING_KEY, "event_keys": ("k",)}


def app_at(url: str, runtime_url: str | None = None) -> dict[str, Any]:
    fn = function("shop-fn")
    fn["steps"]["step"]["runtime"]["url"] = f"{runtime_url or url}?fnId=shop-fn&stepId=step"
    return register_body(fn, url=url)


@pytest.mark.parametrize(
    ("app_url", "runtime_url", "settings", "fragments"),
    [
        ("http://127.0.0.1:9/api", None, PROD, ("127.0.0.1", "loopback", "PGQUEUE_ALLOW_LOOPBACK=1")),
        ("http://localhost:9/api", None, PROD, ("it resolves to 127.0.0.1", "PGQUEUE_ALLOW_LOOPBACK=1")),
        ("http://10.1.2.3/api", None, PROD, ("private-use (RFC 1918)", "PGQUEUE_ALLOWED_APP_NETWORKS")),
        ("http://100.64.0.7/api", None, PROD, ("CGNAT", "PGQUEUE_ALLOWED_APP_NETWORKS")),
        ("http://[fd12::1]/api", None, PROD, ("unique local", "PGQUEUE_ALLOWED_APP_HOSTS")),
        ("http://[::ffff:192.168.1.1]/api", None, PROD, ("IPv4-mapped form of 192.168.1.1",)),
        # The function's own runtime URL is checked too, not only the app's.
        ("http://93.184.216.34/api", "http://10.1.2.3/api", PROD, ("10.1.2.3", "ALLOWED_APP_NETWORKS")),
        ("http://169.254.169.254/api", None, PROD, ("cloud metadata", "PGQUEUE_ALLOW_LINK_LOCAL=1")),
        ("http://169.254.169.254/api", None, {}, ("cloud metadata", "PGQUEUE_ALLOW_LINK_LOCAL=1")),
        ("http://100.100.100.200/api", None, {}, ("cloud metadata",)),
        ("http://0.0.0.0:9/api", None, {}, ("never calls",)),
        ("http://10.1.2.3/api", None, {**PROD, "allowed_app_networks": ("10.0.0.0/16",)}, ("10.1.2.3",)),
    ],
)
async def test_forbidden_app_urls_are_refused_at_registration(
    make_api: ApiFactory,
    app_url: str,
    runtime_url: str | None,
    settings: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    api = await make_api(**settings)
    resp = await register(api, app_at(app_url, runtime_url), BEARER)
    assert_error(resp, 400, "is not allowed", *fragments)
    assert await api.counts(APP_TABLES) == NOTHING


@pytest.mark.parametrize(
    ("app_url", "settings"),
    [
        ("http://10.1.2.3/api", {**PROD, "allowed_app_networks": ("10.0.0.0/8",)}),
        ("http://[fd12::1]/api", {**PROD, "allowed_app_networks": ("fd00::/8",)}),
        ("http://localhost:9/api", {**PROD, "allowed_app_hosts": ("localhost",)}),
        ("http://127.0.0.1:9/api", {**PROD, "allow_loopback": True}),
        ("http://93.184.216.34/api", PROD),
        ("http://does-not-resolve.invalid/api", PROD),  # judged at each call instead
        ("http://10.1.2.3/api", {}),  # dev mode allows local apps
        ("http://127.0.0.1:9/api", {}),
        ("http://169.254.169.254/api", {"allow_link_local": True}),
    ],
)
async def test_allowed_app_urls_register(
    make_api: ApiFactory, app_url: str, settings: dict[str, Any]
) -> None:
    api = await make_api(**settings)
    resp = await register(api, app_at(app_url), BEARER)
    assert resp.status_code == 200, resp.text


class SyncTarget(BaseHTTPRequestHandler):
    """Whatever a sync might be pointed at: answers PUT by path, counts the bytes it got out."""

    protocol_version = "HTTP/1.1"
    sent: ClassVar[dict[str, int]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        kind = self.path.strip("/")
        if kind == "huge":
            self._stream(200, HUGE)
        elif kind == "huge-error":
            self._stream(400, HUGE)
        elif kind == "secret-200":
            self._send(200, json.dumps({"ok": True, "secret": SECRET}).encode())
        elif kind == "secret-500":
            self._send(500, json.dumps({"message": SECRET, "code": "x"}).encode(), {"X-Inngest-SDK": "py:v1"})
        elif kind == "banner":
            self.wfile.write(f"SSH-2.0-{SECRET}\r\n".encode())
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, status: int, size: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = (b'{"message": "' + SECRET.encode() + b'"}').ljust(64 * 1024, b" ")
        sent = 0
        try:
            while sent < size:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        SyncTarget.sent[self.path.strip("/")] = sent


SECRET = "internal-secret-0123456789"
HUGE = 200 * 1024 * 1024


@pytest.fixture
def sync_target() -> Iterator[str]:
    SyncTarget.sent = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SyncTarget)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def sync(api: Api, url: str) -> httpx.Response:
    return await api.client.post("/v1/apps/sync", json={"url": url}, headers=BEARER)


@pytest.mark.parametrize("kind", ["huge", "huge-error"])
async def test_sync_reads_a_bounded_part_of_a_huge_answer(api: Api, sync_target: str, kind: str) -> None:
    started = time.monotonic()
    resp = await sync(api, f"{sync_target}/{kind}")
    elapsed = time.monotonic() - started
    assert SECRET not in resp.text
    if kind == "huge":
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"data": {"url": f"{sync_target}/huge", "app_status": 200}, "status": 200}
    else:
        assert_error(resp, 400, "answered HTTP 400 without an X-Inngest-SDK header")
    # The answer is cut after about a megabyte (plus what socket buffers held), not buffered.
    deadline = time.monotonic() + 5
    while kind not in SyncTarget.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert SyncTarget.sent[kind] < 16 * 1024 * 1024, SyncTarget.sent
    assert elapsed < 10


@pytest.mark.parametrize(
    ("kind", "status", "fragments"),
    [
        ("secret-200", 200, ()),
        ("secret-500", 400, ("the app's SDK answered HTTP 500", "the app's log says why")),
        ("banner", 400, ("could not reach", "RemoteProtocolError")),
    ],
)
async def test_sync_never_reflects_what_the_target_answered(
    api: Api, sync_target: str, kind: str, status: int, fragments: tuple[str, ...]
) -> None:
    resp = await sync(api, f"{sync_target}/{kind}")
    assert resp.status_code == status, resp.text
    assert SECRET not in resp.text
    if status == 400:
        message = assert_error(resp, 400, "sync failed", *fragments)
        assert len(message) < 400


async def test_sync_to_a_forbidden_address_is_refused_naming_the_setting(make_api: ApiFactory) -> None:
    api = await make_api(**PROD)
    for url, fragment in (("http://127.0.0.1:9/api", "PGQUEUE_ALLOW_LOOPBACK=1"),
                          ("http://10.1.2.3/api", "PGQUEUE_ALLOWED_APP_NETWORKS"),
                          ("http://169.254.169.254/latest/meta-data", "PGQUEUE_ALLOW_LINK_LOCAL=1")):
        assert_error(await sync(api, url), 400, "sync failed: refusing to call", fragment)
