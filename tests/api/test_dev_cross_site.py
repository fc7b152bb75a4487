"""The key-less dev server against requests a web page could make, over HTTP to a real `pgqueue dev`:
a foreign Origin is 403, a non-JSON body on an API call 415, a Host that is not loopback (DNS
rebinding) 421 naming PGQUEUE_ALLOWED_HOSTS; nothing is stored by a refused request. The SDKs' own
requests (JSON, no Origin, loopback Host) and the dashboard's same-origin form posts still work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.api.conftest import BEARER, EVENT_KEY, SERVE_SETTINGS, ApiFactory, function, register_body
from tests.api.conftest import assert_error as assert_api_error
from tests.compat.conftest import Server, start_server

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def dev(module_database_url: str) -> Iterator[Server]:
    server = start_server(module_database_url, mode="dev")
    try:
        yield server
    finally:
        server.proc.terminate()


def count(server: Server, table: str) -> int:
    with psycopg.connect(server.database_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgqueue", table))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def post(server: Server, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers, timeout=30)


def assert_error(resp: httpx.Response, status: int, *fragments: str) -> None:
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])


EVIL_APP = register_body(function("evil-fn"), app="evil", url="http://attacker.example/api/inngest")
EVENT = {"name": "evil/event", "data": {}}


@pytest.mark.parametrize(("path", "body", "table"), [
    ("/fn/register", EVIL_APP, "apps"),
    ("/e/dev", EVENT, "events"),
])
def test_cross_site_text_plain_post_with_a_foreign_origin_is_refused(
    dev: Server, path: str, body: Any, table: str
) -> None:
    before = count(dev, table)
    resp = post(dev, path, body, **{"content-type": "text/plain", "origin": EVIL})
    assert_error(resp, 403, "Origin", EVIL)
    assert count(dev, table) == before


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "http://localhost.evil.example"])
def test_a_foreign_origin_is_refused_even_with_json(dev: Server, origin: str) -> None:
    before = count(dev, "apps")
    resp = post(dev, "/fn/register", EVIL_APP, **{"content-type": "application/json", "origin": origin})
    assert_error(resp, 403, "cross-origin")
    assert count(dev, "apps") == before
    # reads too: after DNS rebinding a page could read them
    assert_error(httpx.get(dev.url + "/v1/apps", headers={"origin": origin}), 403)


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None,
])
@pytest.mark.parametrize(("path", "body", "table"), [
    ("/fn/register", EVIL_APP, "apps"),
    ("/e/dev", EVENT, "events"),
    ("/invoke/evil-fn", {"data": {}}, "events"),
])
def test_a_body_that_is_not_declared_json_is_415_without_an_origin_too(
    dev: Server, path: str, body: Any, table: str, content_type: str | None
) -> None:
    before = count(dev, table)
    headers = {"content-type": content_type} if content_type else {}
    resp = post(dev, path, body, **headers)
    assert_error(resp, 415, "Content-Type: application/json")
    assert count(dev, table) == before


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8288", "attacker.test.", "10.0.0.1",
                                  "[fe80::1]", "0.0.0.0"])
def test_dns_rebinding_host_is_421_naming_the_setting(dev: Server, host: str) -> None:
    before = count(dev, "apps")
    resp = post(dev, "/fn/register", EVIL_APP, **{"content-type": "application/json", "host": host})
    assert_error(resp, 421, "PGQUEUE_ALLOWED_HOSTS", host)
    assert count(dev, "apps") == before
    assert_error(httpx.get(dev.url + "/v1/apps", headers={"host": host}), 421, "PGQUEUE_ALLOWED_HOSTS")
    assert httpx.get(dev.url + "/", headers={"host": host}).status_code == 421


def test_sdk_style_requests_still_work(dev: Server) -> None:
    port = dev.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", "127.0.0.5"):
        app = register_body(function("ok-fn"), app=f"ok-{host.replace(':', '-')}")
        resp = post(dev, "/fn/register", app, **{"content-type": "application/json", "host": host})
        assert resp.status_code == 200, (host, resp.text)
    resp = post(dev, "/e/dev", EVENT, **{"content-type": "application/json; charset=utf-8"})
    assert resp.status_code == 200, resp.text
    # the dashboard's own pages post with their own origin
    own = post(dev, "/e/dev", EVENT, **{"content-type": "application/json", "origin": dev.url})
    assert own.status_code == 200, own.text
    # bodiless calls need no content type
    assert httpx.post(dev.url + "/v1/functions/ok-fn/pause", timeout=30).status_code == 200


def test_allowed_hosts_setting_admits_more_names(module_database_url: str) -> None:
    server = start_server(module_database_url, mode="dev",
                          env={"PGQUEUE_ALLOWED_HOSTS": "pgqueue.internal,.dev.example"})
    try:
        for host in ("pgqueue.internal", "PGQUEUE.internal:8288", "a.dev.example", "dev.example"):
            assert httpx.get(server.url + "/v1/apps", headers={"host": host}).status_code == 200, host
        assert httpx.get(server.url + "/v1/apps", headers={"host": "evil.example"}).status_code == 421
        # an allowed name is still not a licence for a foreign page
        resp = httpx.get(server.url + "/v1/apps", headers={"host": "pgqueue.internal", "origin": EVIL})
        assert resp.status_code == 403
    finally:
        server.proc.terminate()


# -- serve mode: keys protect every call, so only a configured Host list is enforced --------------


async def test_serve_mode_checks_the_host_only_when_allowed_hosts_is_set(make_api: ApiFactory) -> None:
    api = await make_api(**SERVE_SETTINGS)
    behind_a_proxy = {"host": "pgqueue.example.com", "origin": "https://pgqueue.example.com"}
    assert (await api.client.get("/v1/runs", headers={**BEARER, **behind_a_proxy})).status_code == 200
    assert (await api.client.get("/v1/runs", headers={**BEARER, "origin": EVIL})).status_code == 200
    event = {"name": "shop/order.created", "data": {}}
    sent = await api.client.post(f"/e/{EVENT_KEY}", content=json.dumps(event), headers={"host": "x.example"})
    assert sent.status_code == 200, sent.text  # no Content-Type rule in serve mode either

    pinned = await make_api(**SERVE_SETTINGS, allowed_hosts=("pgqueue.example.com",))
    ok = await pinned.client.get("/v1/runs", headers={**BEARER, **behind_a_proxy})
    assert ok.status_code == 200
    refused = await pinned.client.get("/v1/runs", headers={**BEARER, "host": "rebind.example"})
    assert_api_error(refused, 421, "PGQUEUE_ALLOWED_HOSTS")
    assert (await pinned.client.get("/health", headers={"host": "127.0.0.1:8288"})).status_code == 200


def test_every_state_changing_route_is_covered_by_the_json_rule_or_is_a_dashboard_form() -> None:
    """A new POST/PUT/PATCH/DELETE route must sit under the API prefixes the dev server's
    Content-Type rule covers, or be a dashboard form action (session + CSRF token)."""
    from fastapi.routing import APIRoute

    from api import security
    from api.app import create_app
    from pgqueue.settings import Settings

    app = create_app(Settings(database_url="postgresql://unused/x").validated(), run_services=False)

    def routes(items: list[Any]) -> Iterator[APIRoute]:
        for route in items:
            if isinstance(route, APIRoute):
                yield route
            elif hasattr(route, "original_router"):
                yield from routes(route.original_router.routes)

    dashboard_forms = {"/login", "/logout", "/logout/everywhere"}
    checked = 0
    for route in routes(app.routes):
        if route.methods <= security.SAFE_METHODS:
            continue
        checked += 1
        if route.path.startswith(security.API_PREFIXES):
            continue
        assert route.path in dashboard_forms or route.path.startswith("/ui/"), route.path
        assert not route.include_in_schema, f"{route.path} looks like an API route outside the JSON rule"
    assert checked >= 15
