"""Security headers on every response (pages, JSON, static files, redirects, errors the app never
meant to raise), a /docs page without third-party scripts, and `Secure` on every cookie the server
sets when the request came over HTTPS — the ASGI scheme, which uvicorn takes from X-Forwarded-Proto
only for the trusted proxies of FORWARDED_ALLOW_IPS (loopback by default)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from api.app import create_app
from pgqueue.settings import Settings
from tests.api.conftest import BEARER, SERVE_SETTINGS, Api, ApiFactory, function, register_body
from tests.compat.conftest import Server, start_server

EXPECTED = {
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "same-origin",
}


def assert_security_headers(resp: httpx.Response) -> None:
    where = f"{resp.request.method} {resp.request.url.path} → {resp.status_code}"
    for name, value in EXPECTED.items():
        assert resp.headers.get(name) == value, (where, name, resp.headers.get(name))
    csp = resp.headers.get("content-security-policy", "")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives.get("default-src") == "'none'", (where, csp)
    assert directives.get("script-src") == "'self'", (where, csp)  # no inline or remote script
    assert directives.get("frame-ancestors") == "'none'", (where, csp)
    assert directives.get("form-action") == "'self'", (where, csp)
    assert directives.get("base-uri") == "'none'", (where, csp)


async def test_every_kind_of_response_carries_the_security_headers(make_api: ApiFactory) -> None:
    dev = await make_api()
    assert (await dev.client.post("/fn/register", json=register_body(function("shop-fn")))).status_code == 200
    responses = [
        await dev.client.get("/"),  # dashboard page (and the session cookie)
        await dev.client.get("/runs/nope"),  # dashboard 404 page
        await dev.client.get("/ui/static/dashboard.js"),
        await dev.client.get("/docs"),
        await dev.client.get("/openapi.json"),
        await dev.client.get("/v1/runs"),
        await dev.client.get("/no/such/path"),
        await dev.client.get("/login"),  # redirect
        await dev.client.post("/v1/cancellations", json={"app_id": "x"}),  # 400
        await dev.client.post("/e/dev", content=b"x", headers={"content-type": "text/plain"}),  # 415
        await dev.client.get("/v1/runs", headers={"origin": "https://evil.example"}),  # 403
        await dev.client.get("/v1/runs", headers={"host": "evil.example"}),  # 421
        await dev.client.post("/v1/apps/sync", content=b"{" * (2 * 1024 * 1024),
                              headers={"content-type": "application/json"}),  # 413
    ]
    serve = await make_api(**SERVE_SETTINGS)
    responses += [
        await serve.client.get("/v1/runs"),  # 401
        await serve.client.get("/"),  # to the login
        await serve.client.get("/login"),
        await serve.client.get("/metrics", headers=BEARER),
    ]
    statuses = {r.status_code for r in responses}
    assert {200, 303, 400, 401, 403, 404, 413, 415, 421} <= statuses
    for resp in responses:
        assert_security_headers(resp)


async def test_an_unexpected_error_answer_carries_them_too(database_url: str) -> None:
    """ServerErrorMiddleware answers an unhandled exception outside every user middleware; the
    headers are added outside it."""
    app = create_app(Settings(database_url=database_url).validated(), run_services=False)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)  # stands in for a route with a bug
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        resp = await client.get("/broken")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal server error; see the server log", "status": 500}
    assert_security_headers(resp)


async def test_docs_page_has_no_scripts_and_describes_every_operation(api: Api) -> None:
    resp = await api.client.get("/docs")
    assert resp.status_code == 200
    page = resp.text
    assert "<script" not in page.lower()
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page), "no third-party resources"
    assert 'href="/openapi.json"' in page
    spec = (await api.client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        assert f">{path}</a>" in page, path
        for op in item.values():
            assert op["summary"].replace("'", "&#39;") in page
    assert "started_after" in page and "CancellationRequest" not in page  # body fields, not the name
    for gone in ("/redoc", "/docs/oauth2-redirect"):
        assert (await api.client.get(gone)).status_code == 404


# -- cookies -------------------------------------------------------------------------------------


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    """name → the full Set-Cookie header value."""
    out: dict[str, str] = {}
    for header in resp.headers.get_list("set-cookie"):
        name = next(iter(SimpleCookie(header)))
        out[name] = header
    return out


def secure(header: str) -> bool:
    return "secure" in [part.strip().lower() for part in header.split(";")[1:]]


@contextlib.asynccontextmanager
async def client_for(api: Api, scheme: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://localhost") as client:
        yield client


async def dashboard_cookies(client: httpx.AsyncClient) -> dict[str, str]:
    """Every cookie a dev-mode visit sets: the session (first page) and the flash (an action)."""
    page = await client.get("/events")
    cookies = set_cookies(page)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    sent = await client.post("/ui/events/send",
                             data={"csrf_token": token.group(1), "name": "shop/x", "data": "{}"})
    assert sent.status_code == 303
    cookies |= set_cookies(sent)
    assert {"pgqueue_session", "pgqueue_flash"} <= set(cookies), cookies
    return cookies


async def test_every_cookie_is_secure_over_https_and_not_over_http(api: Api) -> None:
    async with client_for(api, "https") as client:
        for name, header in (await dashboard_cookies(client)).items():
            assert secure(header), (name, header)
    async with client_for(api, "http") as client:
        for name, header in (await dashboard_cookies(client)).items():
            assert not secure(header), (name, header)  # plain-HTTP dev server: the cookie must work


async def test_login_cookies_are_secure_over_https(make_api: ApiFactory) -> None:
    serve = await make_api(**SERVE_SETTINGS, admin_password="correct horse battery staple")
    async with client_for(serve, "https") as client:
        page = await client.get("/login")
        cookies = set_cookies(page)
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        done = await client.post("/login", data={"login_token": token.group(1),
                                                 "secret": "correct horse battery staple", "next": "/"})
        assert done.status_code == 303
        cookies |= set_cookies(done)
    assert {"pgqueue_login", "pgqueue_session"} <= set(cookies)
    for name, header in cookies.items():
        assert secure(header), (name, header)


@pytest.fixture(scope="module")
def dev_server(module_database_url: str) -> Iterator[Server]:
    server = start_server(module_database_url, mode="dev")
    try:
        yield server
    finally:
        server.proc.terminate()


def test_behind_a_tls_proxy_on_loopback_cookies_are_secure(dev_server: Server) -> None:
    """A real uvicorn: X-Forwarded-Proto from a trusted proxy (loopback) makes the request HTTPS."""
    proxied = {"x-forwarded-proto": "https"}
    page = httpx.get(dev_server.url + "/events", headers=proxied, timeout=30)
    session = set_cookies(page)["pgqueue_session"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    sent = httpx.post(dev_server.url + "/ui/events/send", timeout=30,
                      headers={**proxied, "cookie": session.split(";", 1)[0]},
                      data={"csrf_token": token.group(1), "name": "shop/x", "data": "{}"})
    assert sent.status_code == 303, sent.text
    assert secure(session) and secure(set_cookies(sent)["pgqueue_flash"])
    assert_security_headers(page)
    plain = httpx.get(dev_server.url + "/events", timeout=30)
    assert set_cookies(plain) and all(not secure(h) for h in set_cookies(plain).values())
