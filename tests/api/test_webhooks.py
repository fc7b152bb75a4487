"""Webhooks over the real API and a real database: provider-shaped deliveries through a transform
to stored events, signature checks, failures kept and re-delivered, the body limit, and the REST
surface. The transforms run in the real embedded engine (QuickJS)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.api.conftest import SIGNING_KEY, Api, ApiFactory, assert_error
from tests.helpers import webhook_signing as sign

SECRET = "It's a Secret to Everybody"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def create(api: Api, **body: Any) -> dict[str, Any]:
    r = await api.client.post("/v1/webhooks", json=body)
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["url"].endswith("/e/" + data["key"]) and data["key"].startswith("whk_")
    return dict(data)


async def deliver(
    api: Api,
    hook: dict[str, Any],
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    params: str = "",
) -> Any:
    return await api.client.post(
        f"/e/{hook['key']}{params}", content=body, headers={"content-type": content_type, **(headers or {})}
    )


async def stored(api: Api, event_ids: list[str]) -> list[dict[str, Any]]:
    rows = await api.rows(
        "SELECT id, name, data, external_id FROM pgqueue.events WHERE id = ANY(%s)", (event_ids,)
    )
    order = {i: n for n, i in enumerate(event_ids)}
    return sorted(rows, key=lambda r: order[r["id"]])


async def deliveries(api: Api, hook: dict[str, Any], outcome: str | None = None) -> list[dict[str, Any]]:
    r = await api.client.get(
        f"/v1/webhooks/{hook['id']}/deliveries", params={"outcome": outcome} if outcome else {}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


@pytest.fixture
async def signed_api(make_api: ApiFactory) -> Api:
    """Dev mode with a signing key: webhook secrets are sealed under a key derived from it."""
    return await make_api(signing_key=SIGNING_KEY)


async def test_a_github_push_becomes_an_event_through_the_transform(signed_api: Api) -> None:
    api = signed_api
    hook = await create(
        api, name="GitHub", transform=sign.GITHUB_TRANSFORM, verify={"scheme": "github", "secret": SECRET}
    )
    assert hook["verify"] == {"scheme": "github"} and "secret" not in json.dumps(hook["verify"])
    body = json.dumps(sign.GITHUB_PUSH).encode()
    r = await deliver(
        api,
        hook,
        body,
        {
            **sign.github(SECRET, body),
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == 200
    [event] = await stored(api, r.json()["ids"])
    assert event["name"] == "github/push"
    assert event["data"] == {"repo": "octocat/Hello-World", "pusher": "octocat", "commits": 1}
    assert event["external_id"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    [accepted] = await deliveries(api, hook)
    assert accepted["outcome"] == "accepted" and accepted["event_ids"] == r.json()["ids"]
    # The secret is stored sealed, the key as a hash: neither appears in the table in clear.
    [row] = await api.rows("SELECT row_to_json(w)::text AS text FROM pgqueue.webhooks w")
    assert SECRET not in row["text"] and hook["key"] not in row["text"]
    # The same delivery again (GitHub redelivers with the same X-GitHub-Delivery): stored, deduplicated.
    again = await deliver(
        api,
        hook,
        body,
        {
            **sign.github(SECRET, body),
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        },
    )
    [dup] = await api.rows("SELECT skip_reason FROM pgqueue.events WHERE id = %s", (again.json()["ids"][0],))
    assert "duplicate event id" in dup["skip_reason"]


async def test_bad_signatures_are_refused_before_the_transform_and_healthy_ones_pass(signed_api: Api) -> None:
    api = signed_api
    hook = await create(
        api, name="GitHub", transform=sign.GITHUB_TRANSFORM, verify={"scheme": "github", "secret": SECRET}
    )
    body = json.dumps(sign.GITHUB_PUSH).encode()
    wrong = await deliver(api, hook, body, sign.github("another secret", body))
    assert_error(wrong, 401, "X-Hub-Signature-256 does not match")
    missing = await deliver(api, hook, body)
    assert_error(missing, 401, "missing X-Hub-Signature-256")
    tampered = await deliver(api, hook, body.replace(b"octocat", b"mallory"), sign.github(SECRET, body))
    assert_error(tampered, 401, "does not match")
    ok = await deliver(api, hook, body, sign.github(SECRET, body))
    assert ok.status_code == 200, ok.text
    refused = await deliveries(api, hook, "refused")
    assert len(refused) == 3 and all(d["status"] == 401 and d["event_ids"] == [] for d in refused)
    detail = (await api.client.get(f"/v1/webhooks/{hook['id']}/deliveries/{refused[0]['id']}")).json()["data"]
    assert detail["body"] is None  # an unauthenticated body is not kept
    assert (await api.counts())["events"] == 1


async def test_stripe_signatures_and_their_timestamp_tolerance(signed_api: Api) -> None:
    api = signed_api
    hook = await create(
        api,
        name="Stripe",
        transform=sign.STRIPE_TRANSFORM,
        verify={"scheme": "stripe", "secret": "whsec_stripe_test", "tolerance_s": 300},
    )
    body = json.dumps(sign.STRIPE_EVENT).encode()
    r = await deliver(api, hook, body, sign.stripe("whsec_stripe_test", body))
    assert r.status_code == 200, r.text
    [event] = await stored(api, r.json()["ids"])
    assert event["name"] == "stripe/charge.succeeded" and event["data"]["amount"] == 2000
    import time

    old = await deliver(api, hook, body, sign.stripe("whsec_stripe_test", body, t=int(time.time()) - 3600))
    assert_error(old, 401, "tolerance is 300 s")


async def test_standard_webhooks_and_svix_headers(signed_api: Api) -> None:
    api = signed_api
    hook = await create(api, name="Svix", verify={"scheme": "standard-webhooks", "secret": WHSEC})
    body = b'{"type": "user.created", "data": {"id": "u1"}}'
    r = await deliver(api, hook, body, sign.standard(WHSEC, body))
    assert r.status_code == 200, r.text
    [event] = await stored(api, r.json()["ids"])
    assert event["name"] == "webhook/request.received"  # the default transform
    assert event["data"] == {"type": "user.created", "data": {"id": "u1"}}
    svix = {k.replace("webhook-", "svix-"): v for k, v in sign.standard(WHSEC, body, msg_id="msg_2").items()}
    assert (await deliver(api, hook, body, svix)).status_code == 200
    assert_error(
        await deliver(api, hook, body, sign.standard("whsec_" + "QUJD" * 8, body)), 401, "does not match"
    )


async def test_hmac_with_a_configured_header(signed_api: Api) -> None:
    api = signed_api
    hook = await create(
        api, name="Custom", verify={"scheme": "hmac-sha256", "secret": SECRET, "header": "X-Acme-Sig"}
    )
    body = b'{"hello": "world"}'
    digest = sign.github(SECRET, body)["X-Hub-Signature-256"].removeprefix("sha256=")
    assert (await deliver(api, hook, body, {"X-Acme-Sig": digest})).status_code == 200
    assert_error(await deliver(api, hook, body, {"X-Signature": digest}), 401, "missing X-Acme-Sig")


async def test_a_throwing_transform_keeps_the_delivery_for_redelivery_after_the_fix(api: Api) -> None:
    hook = await create(
        api,
        name="Shop",
        transform="function transform(evt) { return { name: 'shop/' + evt.kind.toUpperCase(), data: evt } }",
    )
    good = await deliver(api, hook, b'{"kind": "order", "n": 1}')
    assert good.status_code == 200, good.text
    bad = await deliver(
        api,
        hook,
        b'{"n": 2}',
        {"X-Trace": "abc", "Authorization": "Bearer s3cret"},
        params="?source=test&source=again",
    )
    message = assert_error(bad, 400, "the transform threw TypeError")
    assert "toUpperCase" in message or "undefined" in message
    [failed] = await deliveries(api, hook, "failed")
    detail = (await api.client.get(f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}")).json()["data"]
    assert detail["body"] == '{"n": 2}' and detail["query"] == {"source": ["test", "again"]}
    assert detail["headers"]["X-Trace"] == "abc" and detail["headers"]["Authorization"] == "[redacted]"
    assert detail["error"].startswith("the transform threw TypeError")
    # Re-delivering with the same transform fails the same way and keeps the delivery.
    again = await api.client.post(f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver")
    assert_error(again, 400, "the transform threw TypeError")
    fixed = ("function transform(evt, headers, q) {"
             " return { name: 'shop/' + (evt.kind || q.source[0]), data: evt } }")
    assert (
        await api.client.patch(f"/v1/webhooks/{hook['id']}", json={"transform": fixed})
    ).status_code == 200
    r = await api.client.post(f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver")
    assert r.status_code == 200, r.text
    [event] = await stored(api, r.json()["data"]["ids"])
    assert event["name"] == "shop/test" and event["data"] == {"n": 2}
    outcomes = {d["id"]: d for d in await deliveries(api, hook)}
    assert outcomes[failed["id"]]["outcome"] == "redelivered"
    assert outcomes[r.json()["data"]["delivery_id"]]["redelivery_of"] == failed["id"]
    # Once re-delivered, it cannot be re-delivered again (its events are stored).
    twice = await api.client.post(f"/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver")
    assert_error(twice, 400, "only a failed delivery")


async def test_an_endless_loop_is_stopped_and_healthy_deliveries_beside_it_are_unaffected(
    make_api: ApiFactory,
) -> None:
    api = await make_api(transform_time_limit_ms=300)
    loop_hook = await create(api, name="Loop", transform="function transform(evt) { for (;;) {} }")
    hook = await create(api, name="Healthy")
    stuck = asyncio.create_task(deliver(api, loop_hook, b'{"a": 1}'))
    healthy = await asyncio.gather(*(deliver(api, hook, json.dumps({"n": n}).encode()) for n in range(20)))
    assert all(r.status_code == 200 for r in healthy), [r.text for r in healthy if r.status_code != 200]
    assert_error(await stuck, 400, "time budget of 300 ms", "stopped")
    [failed] = await deliveries(api, loop_hook, "failed")
    assert failed["body_bytes"] == 8
    assert len(await deliveries(api, hook, "accepted")) == 20


async def test_memory_and_bad_results_are_refused_with_the_reason(api: Api) -> None:
    cases = [
        (
            "function transform(e) { let a = []; for (;;) a.push('x'.repeat(100000)); }",
            "memory budget of 32 MiB",
        ),
        ("function transform(e) { return transform(e) }", "stack"),
        ("function transform(e) { return 'shop/order' }", "returned str"),
        ("function transform(e) { return { data: e } }", "`name` is required"),
        (
            "function transform(e) { return [{ name: 'ok' }, { name: 'inngest/function.failed' }] }",
            "reserved",
        ),
        ("async function transform(e) { return { name: 'a' } }", "synchronous"),
    ]
    for source, fragment in cases:
        hook = await create(api, name="bad", transform=source)
        assert_error(await deliver(api, hook, b"{}"), 400, fragment)
    assert (await api.counts())["events"] == 0


async def test_a_10_mb_body_is_refused_with_413_and_recorded_without_its_body(api: Api) -> None:
    hook = await create(api, name="Big")
    body = b'{"blob": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await deliver(api, hook, body)
    assert_error(r, 413, "a webhook takes at most 2097152 bytes")
    [refused] = await deliveries(api, hook, "refused")
    assert refused["status"] == 413 and refused["body_bytes"] == 0
    assert (await deliver(api, hook, b'{"small": true}')).status_code == 200


async def test_form_bodies_arrays_and_raw(api: Api) -> None:
    source = (
        "function transform(evt, headers, queryParams, raw) {"
        " return [{ name: 'form/a', data: { evt, raw } },"
        " { name: 'form/b', data: { ct: headers['Content-Type'] } }] }"
    )
    hook = await create(api, name="Form", transform=source)
    r = await deliver(
        api,
        hook,
        b"name=Alice&messages=hello&messages=world",
        content_type="application/x-www-form-urlencoded",
    )
    assert r.status_code == 200, r.text
    a, b = await stored(api, r.json()["ids"])
    assert a["data"] == {
        "evt": {"name": ["Alice"], "messages": ["hello", "world"]},
        "raw": "name=Alice&messages=hello&messages=world",
    }
    assert b["data"] == {"ct": "application/x-www-form-urlencoded"}
    xml = await deliver(api, hook, b"<ping/>", content_type="text/xml")
    assert xml.status_code == 200
    [x, _] = await stored(api, xml.json()["ids"])
    assert x["data"] == {"evt": None, "raw": "<ping/>"}
    assert_error(await deliver(api, hook, b"{not json"), 400, "not valid JSON")


async def test_webhook_rest_validation_and_lifecycle(api: Api) -> None:
    assert_error(
        await api.client.post("/v1/webhooks", json={"name": "x", "transform": "function transform( {"}),
        400,
        "does not compile",
    )
    assert_error(
        await api.client.post("/v1/webhooks", json={"name": "x", "transform": "var t = 1"}),
        400,
        "no function named transform",
    )
    assert_error(
        await api.client.post("/v1/webhooks", json={"transform": "function transform(e){}"}), 400, "`name`"
    )
    assert_error(
        await api.client.post(
            "/v1/webhooks", json={"name": "x", "verify": {"scheme": "github", "secret": "s"}}
        ),
        400,
        "needs a signing key",
    )
    assert_error(
        await api.client.post("/v1/webhooks", json={"name": "x", "verify": {"scheme": "md5", "secret": "s"}}),
        400,
        "verify.scheme",
    )
    hook = await create(api, name="Lifecycle")
    listed = (await api.client.get("/v1/webhooks")).json()["data"]
    assert [h["id"] for h in listed] == [hook["id"]] and "key" not in listed[0] and "url" not in listed[0]
    rotated = (await api.client.post(f"/v1/webhooks/{hook['id']}/rotate-key")).json()["data"]
    assert rotated["key"] != hook["key"]
    # The old URL is no webhook any more: in dev mode it is just an event key, so its body must be an event.
    assert_error(await deliver(api, hook, b'{"no": "name"}'), 400, "`name` is required")
    assert (await api.client.post(f"/e/{rotated['key']}", json={"a": 1})).status_code == 200
    assert (await api.client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 200
    assert (await api.client.get(f"/v1/webhooks/{hook['id']}")).status_code == 404


async def test_in_production_a_webhook_url_needs_no_event_key_and_rest_needs_the_bearer(
    make_api: ApiFactory,
) -> None:
    from tests.api.conftest import BEARER, SERVE_SETTINGS

    api = await make_api(**SERVE_SETTINGS)
    assert (await api.client.post("/v1/webhooks", json={"name": "x"})).status_code == 401
    r = await api.client.post("/v1/webhooks", json={"name": "Prod"}, headers=BEARER)
    hook = r.json()["data"]
    assert (await deliver(api, hook, b'{"a": 1}')).status_code == 200
    assert_error(await api.client.post("/e/whk_unknown", json={"a": 1}), 401, "Event key not found")


def _csrf(html: str) -> str:
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def test_the_dashboard_creates_fixes_and_redelivers(api: Api) -> None:
    page = await api.client.get("/webhooks")
    assert page.status_code == 200 and "No webhooks yet" in page.text
    token = _csrf(page.text)
    created = await api.client.post(
        "/ui/webhooks",
        data={
            "csrf_token": token,
            "name": "Dash",
            "transform": "function transform(evt) { return { name: 'dash/' + evt.kind.trim(), data: evt } }",
        },
    )
    assert created.status_code == 201, created.text
    import re

    url = re.search(r"(http://[^<\s]+/e/whk_[^<\s]+)", created.text)
    assert url is not None and "data-created-webhook" in created.text
    key = url.group(1).rsplit("/", 1)[1]
    [row] = await api.rows("SELECT id FROM pgqueue.webhooks")
    hook = {"id": row["id"], "key": key}
    assert_error(await deliver(api, hook, b'{"n": 1}'), 400, "the transform threw")
    detail = await api.client.get(f"/webhooks/{row['id']}?outcome=failed")
    assert 'data-delivery="failed"' in detail.text and "Re-deliver" in detail.text
    saved = await api.client.post(
        f"/ui/webhooks/{row['id']}",
        data={
            "csrf_token": token,
            "name": "Dash",
            "transform": "function transform(evt) { return { name: 'dash/fixed', data: evt } }",
        },
    )
    assert saved.status_code == 303
    [failed] = await deliveries(api, hook, "failed")
    done = await api.client.post(
        f"/ui/webhooks/{row['id']}/deliveries/{failed['id']}/redeliver", data={"csrf_token": token}
    )
    assert done.status_code == 303
    assert [e["name"] for e in await api.rows("SELECT name FROM pgqueue.events")] == ["dash/fixed"]
    keys_page = await api.client.get("/event-keys")
    made = await api.client.post(
        "/ui/event-keys", data={"csrf_token": token, "name": "ui key", "event_names": "dash/*\n"}
    )
    assert made.status_code == 201 and "evk_" in made.text and "dash/*" in made.text, keys_page.text[:200]
    [k] = await api.rows("SELECT id FROM pgqueue.event_keys")
    revoked = await api.client.post(f"/ui/event-keys/{k['id']}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert 'data-key-state="revoked"' in (await api.client.get("/event-keys")).text


async def test_a_webhook_made_with_plain_sql_takes_deliveries_and_retention_prunes_them(api: Api) -> None:
    """The README's INSERT, with a key the operator chose."""
    await api.execute(
        "INSERT INTO pgqueue.webhooks (id, name, key_hash, key_prefix, transform)"
        " VALUES ('github', 'GitHub', encode(sha256(convert_to('whk_from-sql-0123456789', 'UTF8')), 'hex'),"
        " 'whk_', 'function transform(evt, headers) { return { name: \"github/push\", data: evt }; }')"
    )
    r = await deliver(api, {"key": "whk_from-sql-0123456789"}, b'{"ref": "main"}')
    assert r.status_code == 200, r.text
    [event] = await stored(api, r.json()["ids"])
    assert event["name"] == "github/push" and event["data"] == {"ref": "main"}
    from datetime import UTC, datetime, timedelta

    from pgqueue.services.retention import Retention

    retention = Retention(api.app.state.pool, retention_days=1)
    tick = await retention.run_once(now=datetime.now(UTC) + timedelta(days=2))
    assert tick.done
    assert await api.rows("SELECT id FROM pgqueue.webhook_deliveries") == []
