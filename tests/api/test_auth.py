"""Production mode: /v1/*, /v0/* and /fn/register need `Authorization: Bearer <signing key or its
sha256 hash>`, prefixed `signkey-<env>-` or not, current or fallback key; /e/{key} needs an event key."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue.protocol.signing import hashed_key, normalize_key
from tests.api.conftest import (
    APP_TABLES,
    EVENT_KEY,
    FALLBACK_KEY,
    OTHER_KEY,
    SIGNING_KEY,
    Api,
    ApiFactory,
    assert_error,
    function,
    register_body,
)

RAW = normalize_key(SIGNING_KEY)
HASH = hashed_key(SIGNING_KEY)
OTHER_RAW = normalize_key(OTHER_KEY)

ENDPOINTS = [
    ("GET", "/v1/runs", None, 200),
    ("GET", "/v0/runs/x/actions", None, 404),  # authorised, then the run is not found
    ("POST", "/fn/register", register_body(function("shop-fn")), 200),
]

REFUSED: dict[str, dict[str, str]] = {
    "missing": {},
    "empty": {"authorization": ""},
    "bearer-without-token": {"authorization": "Bearer "},
    "basic-scheme": {"authorization": f"Basic {RAW}"},
    "token-without-scheme": {"authorization": HASH},
    "wrong-key-raw": {"authorization": f"Bearer {OTHER_RAW}"},
    "wrong-key-hashed": {"authorization": f"Bearer {hashed_key(OTHER_KEY)}"},
    "other-environment-key": {"authorization": f"Bearer {OTHER_KEY}"},
    "other-environment-key-hashed": {"authorization": f"Bearer signkey-test-{hashed_key(OTHER_KEY)}"},
    "truncated-raw-key": {"authorization": f"Bearer {SIGNING_KEY[:-2]}"},
    "truncated-hash": {"authorization": f"Bearer {HASH[:-1]}"},
    "truncated-prefixed-hash": {"authorization": f"Bearer signkey-prod-{HASH[:32]}"},
    "hash-with-extra-character": {"authorization": f"Bearer {HASH}0"},
    "hash-of-the-hash": {"authorization": f"Bearer {hashed_key(HASH)}"},
    "prefix-only": {"authorization": "Bearer signkey-prod-"},
    "event-key": {"authorization": f"Bearer {EVENT_KEY}"},
    "two-tokens": {"authorization": f"Bearer {HASH} {HASH}"},
}

ACCEPTED: dict[str, str] = {
    "raw-key-with-prefix": SIGNING_KEY,
    "raw-key-without-prefix": RAW,
    "hashed-key": HASH,
    "prefixed-hashed-key": f"signkey-prod-{HASH}",
    "fallback-key": FALLBACK_KEY,
    "fallback-key-hashed": hashed_key(FALLBACK_KEY),
    "fallback-key-prefixed-hashed": f"signkey-prod-{hashed_key(FALLBACK_KEY)}",
    # The prefix is a label, not part of the secret: like the Go server, any `signkey-<env>-` is
    # stripped before comparing (tests/unit/test_signing.py pins the same rule).
    "same-secret-other-prefix": f"signkey-staging-{HASH}",
}


async def call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await api.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("headers", REFUSED.values(), ids=list(REFUSED))
@pytest.mark.parametrize(("method", "path", "body", "_ok"), ENDPOINTS, ids=[p for _, p, _, _ in ENDPOINTS])
async def test_bad_bearer_tokens_are_refused(
    shared_serve_api: Api, method: str, path: str, body: Any, _ok: int, headers: dict[str, str]
) -> None:
    api = shared_serve_api
    before = await api.counts((*APP_TABLES, "runs"))
    resp = await call(api, method, path, body, headers)
    assert resp.json() == {
        "error": "missing or invalid Authorization bearer token: use the signing key or its hash",
        "status": 401,
    }
    assert_error(resp, 401)
    assert await api.counts((*APP_TABLES, "runs")) == before


@pytest.mark.parametrize("token", ACCEPTED.values(), ids=list(ACCEPTED))
@pytest.mark.parametrize(("method", "path", "body", "ok"), ENDPOINTS, ids=[p for _, p, _, _ in ENDPOINTS])
async def test_signing_key_tokens_are_accepted(
    shared_serve_api: Api, method: str, path: str, body: Any, ok: int, token: str
) -> None:
    resp = await call(shared_serve_api, method, path, body, {"authorization": f"Bearer {token}"})
    assert resp.status_code == ok, resp.text
    if ok == 404:
        assert_error(resp, 404, "run x not found")


# A durable endpoint's output and a realtime subscriber take a token, not the signing key.
TOKEN_ROUTES = frozenset({"/v1/http/runs/{run_id}/output", "/v1/realtime/sse"})


async def test_every_rest_route_is_protected(shared_serve_api: Api) -> None:
    """Walk the OpenAPI paths so a new /v0, /v1 or /fn route cannot ship without the bearer check."""
    checked = 0
    for path, operations in shared_serve_api.app.openapi()["paths"].items():
        if not path.startswith(("/v0/", "/v1/", "/fn/")):
            continue
        for method in operations:
            concrete = path.replace("{", "").replace("}", "")
            resp = await shared_serve_api.client.request(method.upper(), concrete, json={})
            # A durable endpoint's output is read with the run's token from the endpoint's redirect.
            assert_error(resp, 401, "token" if path in TOKEN_ROUTES else "Authorization")
            checked += 1
    assert checked >= 12


async def test_dev_mode_needs_no_token(api: Api) -> None:
    assert (await api.client.get("/v1/runs")).status_code == 200
    resp = await api.client.post("/fn/register", json=register_body(function("shop-fn")))
    assert resp.status_code == 200


async def test_serve_mode_without_fallback_refuses_the_old_key(make_api: ApiFactory) -> None:
    api = await make_api(mode="serve", signing_key=SIGNING_KEY, event_keys=(EVENT_KEY,))
    resp = await api.client.get("/v1/runs", headers={"authorization": f"Bearer {hashed_key(FALLBACK_KEY)}"})
    assert_error(resp, 401)
    resp = await api.client.get("/v1/runs", headers={"authorization": f"Bearer {HASH}"})
    assert resp.status_code == 200


async def test_serve_mode_expects_the_cloud_server_kind(serve_api: Api) -> None:
    headers = {"authorization": f"Bearer {HASH}", "x-inngest-expected-server-kind": "dev"}
    resp = await serve_api.client.post(
        "/fn/register", json=register_body(function("shop-fn")), headers=headers
    )
    assert_error(resp, 400, "server kind", "'dev'", "'cloud'")
    headers["x-inngest-expected-server-kind"] = "cloud"
    resp = await serve_api.client.post(
        "/fn/register", json=register_body(function("shop-fn")), headers=headers
    )
    assert resp.status_code == 200, resp.text


async def test_dev_info_is_hidden_in_serve_mode(serve_api: Api) -> None:
    assert_error(await serve_api.client.get("/dev"), 404)
    assert (await serve_api.client.get("/health")).status_code == 200
