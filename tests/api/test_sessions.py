"""Server-side dashboard sessions against real `pgqueue serve` processes over HTTP and real
PostgreSQL: logout ends a session at once (its cookie no longer works anywhere); a session ends when
the credential that opened it is no longer accepted (admin password changed, API token removed or
rotated, signing-key login replaced); "sign out everywhere" (dashboard button and
`DELETE /v1/sessions`) ends them all; sessions are shared by every server process; the database
holds only a hash of each session token and an HMAC of the credential."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.serve import (
    BEARER,
    SESSION_COOKIE,
    SIGNING_KEY,
    ServeProc,
    csrf,
    execute,
    login,
    rows,
    signed_in,
    start_serve,
    with_cookie,
)

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a whole new admin password"
TOKEN = "apitoken-" + "7" * 40
NEW_TOKEN = "apitoken-" + "8" * 40


@pytest.fixture
def started() -> Iterator[list[ServeProc]]:
    procs: list[ServeProc] = []
    yield procs
    for proc in procs:
        proc.stop()


def _serve(started: list[ServeProc], database_url: str, **env: str) -> ServeProc:
    proc = start_serve(database_url, env, name=f"pgqueue-serve-{len(started)}")
    started.append(proc)
    return proc


def _signed_in_as(server: ServeProc, secret: str, address: str = "127.0.0.2") -> tuple[httpx.Client, str]:
    client = server.client(address)
    resp = login(client, secret)
    assert resp.status_code == 303, resp.text
    assert signed_in(client)
    return client, client.cookies[SESSION_COOKIE]


def test_logout_ends_the_session_at_once(started: list[ServeProc], database_url: str) -> None:
    server = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    client, cookie = _signed_in_as(server, PASSWORD)
    token = csrf(client)
    resp = client.post("/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/login"

    # the cookie someone copied before the logout opens nothing now: no page, no action
    with with_cookie(server, cookie, "127.0.0.3") as thief:
        assert not signed_in(thief)
        action = thief.post("/ui/functions/x/pause", data={"csrf_token": token})
        assert action.status_code == 401, action.text
        again = thief.post("/logout", data={"csrf_token": token})
        assert again.status_code == 401
    assert rows(database_url, "SELECT 1 FROM pgqueue.sessions") == []


def test_changing_the_admin_password_ends_the_sessions_it_opened(
    started: list[ServeProc], database_url: str
) -> None:
    first = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD, PGQUEUE_API_TOKENS=TOKEN)
    _, by_password = _signed_in_as(first, PASSWORD)
    _, by_token = _signed_in_as(first, TOKEN, "127.0.0.3")
    first.stop()
    started.remove(first)

    second = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=NEW_PASSWORD, PGQUEUE_API_TOKENS=TOKEN)
    with with_cookie(second, by_password) as old:
        assert not signed_in(old)
    with with_cookie(second, by_token) as kept:
        assert signed_in(kept)  # the token that opened it is still configured
    with second.client("127.0.0.4") as fresh:
        assert login(fresh, PASSWORD).status_code == 401
        assert login(fresh, NEW_PASSWORD).status_code == 303
    # the refused session is gone from the table too; the two live ones stay
    assert len(rows(database_url, "SELECT 1 FROM pgqueue.sessions")) == 2


def test_removing_or_rotating_an_api_token_ends_the_sessions_it_opened(
    started: list[ServeProc], database_url: str
) -> None:
    first = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD,
                   PGQUEUE_API_TOKENS=f"{TOKEN},{NEW_TOKEN}")
    _, by_old_token = _signed_in_as(first, TOKEN)
    _, by_new_token = _signed_in_as(first, NEW_TOKEN, "127.0.0.3")
    _, by_password = _signed_in_as(first, PASSWORD, "127.0.0.4")
    first.stop()
    started.remove(first)

    rotated = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD, PGQUEUE_API_TOKENS=NEW_TOKEN)
    for cookie, expected in ((by_old_token, False), (by_new_token, True), (by_password, True)):
        with with_cookie(rotated, cookie) as client:
            assert signed_in(client) is expected


def test_a_signing_key_session_ends_when_a_password_replaces_that_login(
    started: list[ServeProc], database_url: str
) -> None:
    first = _serve(started, database_url)
    _, by_key = _signed_in_as(first, SIGNING_KEY)
    first.stop()
    started.remove(first)
    second = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    with with_cookie(second, by_key) as client:
        assert not signed_in(client)


def test_sign_out_everywhere_from_the_rest_api(started: list[ServeProc], database_url: str) -> None:
    server = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD, PGQUEUE_API_TOKENS=TOKEN)
    a, _ = _signed_in_as(server, PASSWORD)
    b, _ = _signed_in_as(server, TOKEN, "127.0.0.3")
    with server.client() as rest:
        assert rest.delete("/v1/sessions").status_code == 401  # it needs a bearer token
        assert signed_in(a) and signed_in(b)
        resp = rest.delete("/v1/sessions", headers=BEARER)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"data": {"ended": 2}}
        resp = rest.delete("/v1/sessions", headers={"authorization": f"Bearer {TOKEN}"})
        assert resp.json() == {"data": {"ended": 0}}
    assert not signed_in(a) and not signed_in(b)
    assert "ended every dashboard session (2)" in server.log()


def test_sign_out_everywhere_from_the_dashboard(started: list[ServeProc], database_url: str) -> None:
    server = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    a, cookie_a = _signed_in_as(server, PASSWORD)
    b, _ = _signed_in_as(server, PASSWORD, "127.0.0.3")
    page = a.get("/runs").text
    assert re.search(r'<form method="post" action="/logout/everywhere"', page)
    assert b.post("/logout/everywhere", data={}).status_code == 403  # CSRF token required
    resp = a.post("/logout/everywhere", data={"csrf_token": csrf(a)})
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert not signed_in(b)
    with with_cookie(server, cookie_a) as old:
        assert not signed_in(old)
    assert rows(database_url, "SELECT 1 FROM pgqueue.sessions") == []


def test_sessions_are_shared_by_every_server_process(started: list[ServeProc], database_url: str) -> None:
    a = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    b = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    client_a, cookie = _signed_in_as(a, PASSWORD)
    with with_cookie(b, cookie) as client_b:
        assert signed_in(client_b)
        token = csrf(client_b)  # CSRF tokens are the same on every process (derived from the key)
        assert token == csrf(client_a)
        assert client_b.post("/logout", data={"csrf_token": token}).status_code == 303
    assert not signed_in(client_a)


def test_only_a_hash_of_the_session_token_is_stored(started: list[ServeProc], database_url: str) -> None:
    server = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    _, cookie = _signed_in_as(server, PASSWORD)
    version, _, token = cookie.partition(".")
    assert version == "s1" and len(token) >= 43
    (row,) = rows(database_url, "SELECT * FROM pgqueue.sessions")
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    stored = repr(row)
    for secret in (token, cookie, PASSWORD, hashlib.sha256(PASSWORD.encode()).hexdigest()):
        assert secret not in stored
    assert row["credential"] == "password" and row["created_from"] == "127.0.0.2"


def test_an_expired_session_is_refused_and_pruned_by_the_next_login(
    started: list[ServeProc], database_url: str
) -> None:
    server = _serve(started, database_url, PGQUEUE_ADMIN_PASSWORD=PASSWORD)
    client, _ = _signed_in_as(server, PASSWORD)
    execute(database_url, "UPDATE pgqueue.sessions SET created_at = created_at - interval '13 hours',"
                          " expires_at = expires_at - interval '13 hours'")
    assert not signed_in(client)
    _signed_in_as(server, PASSWORD, "127.0.0.3")
    assert len(rows(database_url, "SELECT 1 FROM pgqueue.sessions")) == 1
