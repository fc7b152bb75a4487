"""Dashboard and REST authentication in serve mode: every route refuses requests without a session
or token; the login accepts what it should and nothing else; the session cookie is signed,
HttpOnly and SameSite=Strict; dashboard actions need the CSRF token; API tokens work on the REST
API but not on SDK endpoints; no secret ever appears in a page or a log."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from api import auth
from pgqueue.protocol.signing import hashed_key, normalize_key
from tests.api.conftest import (
    EVENT_KEY,
    FALLBACK_KEY,
    SERVE_SETTINGS,
    SIGNING_KEY,
    Api,
    ApiFactory,
    assert_error,
    function,
    register_body,
)

ADMIN_PASSWORD = "correct horse battery staple"
API_TOKEN = "apitoken-" + "7" * 40
SECRETS = (SIGNING_KEY, normalize_key(SIGNING_KEY), hashed_key(SIGNING_KEY), FALLBACK_KEY,
           normalize_key(FALLBACK_KEY), hashed_key(FALLBACK_KEY), EVENT_KEY, ADMIN_PASSWORD, API_TOKEN)
BEARER = {"authorization": f"Bearer {SIGNING_KEY}"}

# Routes that are public on purpose: liveness, the login itself, the API description, and the SDK
# endpoints that check their own keys (event key in the path, signing key on registration).
PUBLIC = {"/health", "/login", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/dev"}
# A durable endpoint's output takes the run's token from the endpoint's redirect; a realtime
# subscriber presents its subscription token (tests/api/test_realtime.py refuses it without one).
OWN_KEYS = {"/e/{event_key}", "/e/", "/fn/register",
            "/v1/http/runs/{run_id}/output", "/v1/checkpoint/{run_id}/output", "/v1/realtime/sse"}


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, including those of included routers (which newer FastAPI keeps nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(_api_routes(route.original_router.routes))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def _login(api: Api, secret: str) -> httpx.Response:
    page = await api.client.get("/login")
    assert page.status_code == 200, page.text
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return await api.client.post("/login", data={"login_token": token.group(1), "secret": secret, "next": "/runs"})


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def _register(api: Api, headers: dict[str, str]) -> None:
    resp = await api.client.post("/fn/register", json=register_body(function("shop-fn")), headers=headers)
    assert resp.status_code == 200, resp.text


@pytest.fixture
async def serve(make_api: ApiFactory) -> Api:
    return await make_api(**SERVE_SETTINGS)


async def test_every_route_refuses_requests_without_a_session_or_token(serve: Api) -> None:
    checked: list[str] = []
    for route in _api_routes(serve.app.routes):
        if route.path in PUBLIC | OWN_KEYS:
            continue
        for method in route.methods:
            resp = await serve.client.request(method, _concrete(route.path), data={"csrf_token": "x"})
            where = f"{method} {route.path}"
            if route.path.startswith(("/v0/", "/v1/", "/metrics", "/invoke/")):  # REST: JSON 401
                assert_error(resp, 401, "Authorization")
            elif method == "GET" and not route.path.startswith("/ui/"):  # a page: off to the login, nothing shown
                assert resp.status_code == 303, where
                assert resp.headers["location"].startswith("/login?next="), where
                assert not resp.text
            else:  # a dashboard action, or what the dashboard's script fetches (/ui/...)
                assert_error(resp, 401, "sign in")
            checked.append(where)
    assert len(checked) >= 40
    assert any(c.startswith("POST /ui/") for c in checked) and "GET /runs/{run_id}" in checked
    assert "GET /metrics" in checked


async def test_sdk_endpoints_keep_their_own_keys(serve: Api) -> None:
    assert_error(await serve.client.post("/e/not-a-key", json={"name": "a/b"}), 401)
    assert_error(await serve.client.post("/fn/register", json=register_body(function("shop-fn"))), 401)
    await _register(serve, BEARER)
    for path in ("/v1/http/runs/r/output", "/v1/checkpoint/r/output"):
        assert_error(await serve.client.get(path, headers=BEARER), 401, "token")
        assert_error(await serve.client.get(f"{path}?token=nope"), 401, "token")


async def test_login_with_the_signing_key_when_nothing_else_is_configured(serve: Api) -> None:
    assert auth.login_hint(serve.settings).startswith("the signing key")
    refused = await _login(serve, "not the key")
    assert refused.status_code == 401 and "not accepted" in refused.text
    assert auth.SESSION_COOKIE not in refused.headers.get("set-cookie", "")

    for secret in (SIGNING_KEY, hashed_key(FALLBACK_KEY)):
        serve.client.cookies.clear()
        resp = await _login(serve, secret)
        assert resp.status_code == 303 and resp.headers["location"] == "/runs"
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith(f"{auth.SESSION_COOKIE}=s1.")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        page = await serve.client.get("/runs")
        assert page.status_code == 200 and "Sign out" in page.text and "Production" in page.text


async def test_admin_password_and_api_tokens_replace_the_signing_key_for_login(make_api: ApiFactory) -> None:
    api = await make_api(**SERVE_SETTINGS, admin_password=ADMIN_PASSWORD, api_tokens=(API_TOKEN,))
    assert (await _login(api, SIGNING_KEY)).status_code == 401
    assert (await _login(api, ADMIN_PASSWORD + "x")).status_code == 401
    assert (await _login(api, ADMIN_PASSWORD)).status_code == 303
    api.client.cookies.clear()
    assert (await _login(api, API_TOKEN)).status_code == 303


async def test_the_login_form_has_its_own_csrf_token(serve: Api) -> None:
    resp = await serve.client.post("/login", data={"secret": SIGNING_KEY})
    assert resp.status_code == 403 and "expired" in resp.text
    await serve.client.get("/login")  # sets the login nonce cookie
    resp = await serve.client.post("/login", data={"secret": SIGNING_KEY, "login_token": "forged"})
    assert resp.status_code == 403
    assert auth.SESSION_COOKIE not in serve.client.cookies


async def test_login_redirects_only_to_local_paths(serve: Api) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        serve.client.cookies.clear()
        page = await serve.client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        resp = await serve.client.post("/login", data={"login_token": token.group(1), "secret": SIGNING_KEY,
                                                       "next": target})
        assert resp.status_code == 303 and resp.headers["location"] == "/"


async def test_tampered_expired_and_foreign_sessions_are_refused(serve: Api, make_api: ApiFactory) -> None:
    assert (await _login(serve, SIGNING_KEY)).status_code == 303
    good = serve.client.cookies[auth.SESSION_COOKIE]
    version, token = good.split(".")
    assert version == "s1"
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (f"s1.{flipped}", f"s1.{token[:-2]}", f"v1.{token}", "s1.", "v1..", "garbage"):
        serve.client.cookies.set(auth.SESSION_COOKIE, bad)
        resp = await serve.client.get("/runs")
        assert resp.status_code == 303, bad
    serve.client.cookies.set(auth.SESSION_COOKIE, good)
    assert (await serve.client.get("/runs")).status_code == 200
    # a signed cookie is what dev mode hands out: in serve mode even a correctly signed one, with an
    # admin subject and a far expiry, opens nothing (serve-mode sessions exist only as stored rows)
    key = auth.session_key(_request_for(serve))
    for session in (auth.Session("admin", "sid", 2**40), auth.Session("dev", "sid", 2**40)):
        serve.client.cookies.set(auth.SESSION_COOKIE, auth.encode(session, key))
        assert (await serve.client.get("/runs")).status_code == 303
    # a stored session past its expiry is refused
    await serve.execute("UPDATE pgqueue.sessions SET created_at = created_at - interval '13 hours',"
                        " expires_at = expires_at - interval '13 hours'")
    serve.client.cookies.set(auth.SESSION_COOKIE, good)
    assert (await serve.client.get("/runs")).status_code == 303


def _request_for(api: Api) -> Any:
    class _Req:
        class app:  # noqa: N801 - a stand-in for request.app
            state = api.app.state

    return _Req()


async def test_dashboard_actions_need_the_csrf_token(serve: Api) -> None:
    await _register(serve, BEARER)
    assert (await _login(serve, SIGNING_KEY)).status_code == 303
    page = await serve.client.get("/functions/shop-fn")
    assert page.status_code == 200
    token = _csrf(page.text)

    for form in ({}, {"csrf_token": ""}, {"csrf_token": token[:-2] + "xx"}):
        resp = await serve.client.post("/ui/functions/shop-fn/pause", data=form)
        assert_error(resp, 403, "CSRF")
    assert (await serve.client.get("/v1/functions/shop-fn", headers=BEARER)).json()["data"]["paused"] is False

    resp = await serve.client.post("/ui/functions/shop-fn/pause", data={"csrf_token": token})
    assert resp.status_code == 303
    assert (await serve.client.get("/v1/functions/shop-fn", headers=BEARER)).json()["data"]["paused"] is True
    flash = await serve.client.get(resp.headers["location"])
    assert "paused" in flash.text and "Resume" in flash.text
    # the header form works too (for scripts)
    resp = await serve.client.post("/ui/functions/shop-fn/resume", headers={"x-csrf-token": token})
    assert resp.status_code == 303


async def test_logout_needs_csrf_and_ends_the_session(serve: Api) -> None:
    assert (await _login(serve, SIGNING_KEY)).status_code == 303
    token = _csrf((await serve.client.get("/")).text)
    assert_error(await serve.client.post("/logout"), 403)
    resp = await serve.client.post("/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert (await serve.client.get("/")).status_code == 303


async def test_api_tokens_open_the_rest_api_but_not_sdk_registration(make_api: ApiFactory) -> None:
    api = await make_api(**SERVE_SETTINGS, api_tokens=(API_TOKEN,))
    token = {"authorization": f"Bearer {API_TOKEN}"}
    assert (await api.client.get("/v1/runs", headers=token)).status_code == 200
    assert (await api.client.get("/metrics", headers=token)).status_code == 200
    assert_error(await api.client.get("/v1/runs", headers={"authorization": f"Bearer {API_TOKEN}x"}), 401,
                 "API token")
    assert_error(await api.client.post("/fn/register", json=register_body(function("shop-fn")), headers=token), 401)


async def test_dev_mode_is_open_but_actions_still_need_the_csrf_token(make_api: ApiFactory) -> None:
    api = await make_api()
    await _register(api, {})
    page = await api.client.get("/functions/shop-fn")
    assert page.status_code == 200 and "Development" in page.text
    assert auth.SESSION_COOKIE in api.client.cookies  # issued on the first visit
    token = _csrf(page.text)
    assert_error(await api.client.post("/ui/functions/shop-fn/pause", data={}), 403, "CSRF")
    cookies = dict(api.client.cookies)
    api.client.cookies.clear()
    assert_error(await api.client.post("/ui/functions/shop-fn/pause", data={"csrf_token": token}), 401)
    api.client.cookies.update(cookies)
    assert (await api.client.post("/ui/functions/shop-fn/pause", data={"csrf_token": token})).status_code == 303
    assert (await api.client.get("/login")).status_code == 303  # nothing to log in to


async def test_no_secret_appears_in_pages_or_logs(
    make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = await make_api(**SERVE_SETTINGS, admin_password=ADMIN_PASSWORD, api_tokens=(API_TOKEN,))
    await _register(api, BEARER)
    sent = await api.client.post(f"/e/{EVENT_KEY}", json={"name": "shop/order.created", "data": {"n": 1}})
    assert sent.status_code == 200
    pages = [(await api.client.get("/login")).text, (await _login(api, "wrong password")).text]
    assert (await _login(api, ADMIN_PASSWORD)).status_code == 303
    for path in ("/", "/apps", "/runs", "/events", "/functions/shop-fn", f"/events/{sent.json()['ids'][0]}",
                 "/runs/nope", "/docs", "/openapi.json"):
        resp = await api.client.get(path)
        assert resp.status_code in (200, 404), path
        pages.append(resp.text)
    pages.append((await api.client.get("/metrics", headers=BEARER)).text)
    # the server's own records (the test's httpx client logs its request URLs, event key included)
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "login refused" in server_log
    for text in [*pages, server_log, repr(api.settings)]:
        for secret in SECRETS:
            assert secret not in text
