"""Dashboard sessions and login throttling through the Lambda API handler, with two containers (two
fresh imports of lambda/api_handler.py) and recorded API Gateway / ALB event shapes: a session opened
in one container works in the other and a logout in one ends it in both; failed logins counted in
one container make the client wait in the other; the client address is the source address API
Gateway saw, or the entry an ALB appended to X-Forwarded-For (not what the client put before it)."""

from __future__ import annotations

import base64
import copy
import re
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.serverless.conftest import LambdaContext, fixture

CTX = LambdaContext()
PASSWORD = "lambda dashboard password"


@pytest.fixture
def containers(lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, handlers: Any) -> tuple[Any, Any]:
    monkeypatch.setenv("PGQUEUE_ADMIN_PASSWORD", PASSWORD)
    return handlers("api_handler"), handlers("api_handler")


def _headers(response: dict[str, Any]) -> dict[str, str]:
    found = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        found[k.lower()] = ", ".join(values)
    return found


def _set_cookies(response: dict[str, Any]) -> dict[str, str]:
    raw = list(response.get("cookies") or [])
    raw += (response.get("multiValueHeaders") or {}).get("set-cookie", [])
    if "set-cookie" in (response.get("headers") or {}):
        raw.append(response["headers"]["set-cookie"])
    return {c.split("=", 1)[0]: c.split("=", 1)[1].split(";", 1)[0] for c in raw}


def _text(response: dict[str, Any]) -> str:
    body = response.get("body") or ""
    return base64.b64decode(body).decode() if response.get("isBase64Encoded") else body


def api_gateway(method: str, path: str, *, source_ip: str, cookies: dict[str, str] | None = None,
                form: dict[str, str] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(fixture("http_api_v2_health"))
    event["rawPath"] = path
    event["requestContext"]["http"].update(method=method, path=path, sourceIp=source_ip)
    event["headers"]["x-forwarded-for"] = source_ip
    if cookies:
        event["cookies"] = [f"{k}={v}" for k, v in cookies.items()]
    if form is not None:
        body = urlencode(form).encode()
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
        event["headers"].update({"content-type": "application/x-www-form-urlencoded",
                                 "content-length": str(len(body))})
    return event


def alb(method: str, path: str, *, forwarded_for: str, cookies: dict[str, str] | None = None,
        form: dict[str, str] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(fixture("alb_health"))
    event.update(httpMethod=method, path=path)
    event["headers"]["x-forwarded-for"] = forwarded_for
    if cookies:
        event["headers"]["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if form is not None:
        event["body"] = urlencode(form)
        event["headers"]["content-type"] = "application/x-www-form-urlencoded"
    return event


def login_form(container: Any, make: Any, **where: str) -> dict[str, str]:
    """GET /login: the nonce cookie and the form's token, as a browser would keep them."""
    page = container.handler(make("GET", "/login", **where), CTX)
    assert page["statusCode"] == 200, page
    token = re.search(r'name="login_token" value="([^"]+)"', _text(page))
    assert token is not None
    return {"cookie": _set_cookies(page)["pgqueue_login"], "token": token.group(1)}


def attempt(container: Any, make: Any, form: dict[str, str], secret: str, **where: str) -> dict[str, Any]:
    return container.handler(make("POST", "/login", cookies={"pgqueue_login": form["cookie"]},
                                  form={"login_token": form["token"], "secret": secret}, **where), CTX)


def test_a_session_opened_in_one_container_works_and_ends_in_the_other(containers: tuple[Any, Any]) -> None:
    a, b = containers
    where = {"source_ip": "203.0.113.10"}
    done = attempt(a, api_gateway, login_form(a, api_gateway, **where), PASSWORD, **where)
    assert done["statusCode"] == 303, done
    session = {"pgqueue_session": _set_cookies(done)["pgqueue_session"]}

    page = b.handler(api_gateway("GET", "/runs", cookies=session, **where), CTX)
    assert page["statusCode"] == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', _text(page))
    assert csrf is not None
    logout = api_gateway("POST", "/logout", cookies=session, form={"csrf_token": csrf.group(1)}, **where)
    out = b.handler(logout, CTX)
    assert out["statusCode"] == 303

    again = a.handler(api_gateway("GET", "/runs", cookies=session, **where), CTX)
    assert again["statusCode"] == 303 and _headers(again)["location"].startswith("/login")


def test_failures_in_one_container_make_the_client_wait_in_the_other(containers: tuple[Any, Any]) -> None:
    a, b = containers
    where = {"source_ip": "198.51.100.20"}
    form = login_form(a, api_gateway, **where)
    for container in (a, b, a, b, a):
        assert attempt(container, api_gateway, form, "wrong password!", **where)["statusCode"] == 401
    locked = attempt(b, api_gateway, form, PASSWORD, **where)
    assert locked["statusCode"] == 429
    assert 1 <= int(_headers(locked)["retry-after"]) <= 15
    # another client, as API Gateway saw it, is not locked by the first one's failures
    other = {"source_ip": "198.51.100.21"}
    fresh = login_form(a, api_gateway, **other)
    assert attempt(a, api_gateway, fresh, PASSWORD, **other)["statusCode"] == 303


def test_behind_an_alb_only_the_address_it_appended_counts(containers: tuple[Any, Any]) -> None:
    a, _ = containers
    form = login_form(a, alb, forwarded_for="192.0.2.50")
    for i in range(5):  # the client varies what it sends; the ALB appends the same real address
        resp = attempt(a, alb, form, "wrong password!", forwarded_for=f"10.9.9.{i}, 192.0.2.50")
        assert resp["statusCode"] == 401
    resp = attempt(a, alb, form, PASSWORD, forwarded_for="10.9.9.99, 192.0.2.50")
    assert resp["statusCode"] == 429
    resp = attempt(a, alb, form, PASSWORD, forwarded_for="192.0.2.50, 192.0.2.51")
    assert resp["statusCode"] == 303
