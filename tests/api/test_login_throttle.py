"""Login throttling against a real `pgqueue serve` process over HTTP and real PostgreSQL.

What is built: failures are counted per client address (the socket peer; IPv6 by /64) and for the
dashboard account as a whole (the login has no user name, so every failure counts against it).
After PGQUEUE_LOGIN_MAX_FAILURES (5) failures from one address, that address waits
PGQUEUE_LOGIN_LOCKOUT_S (15 s), doubling with each further failure up to PGQUEUE_LOGIN_MAX_LOCKOUT_S;
after PGQUEUE_LOGIN_ACCOUNT_MAX_FAILURES (20) failures from anywhere, every address waits. A waiting
client gets 429 with Retry-After and its password is not even checked. The counts live in
PostgreSQL, so every server process sees the same ones. Clients connect from distinct loopback
addresses (127.0.0.2, 127.0.0.3, ...), which the server sees as distinct peers.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.helpers.procs import free_port, pgqueue_argv, start_process
from tests.helpers.serve import (
    SESSION_COOKIE,
    ServeProc,
    execute,
    login,
    login_token,
    rows,
    signed_in,
    start_serve,
)

PASSWORD = "correct horse battery staple"
WRONG = "Tr0ub4dor&3-wrong"


@pytest.fixture
def server(database_url: str) -> Iterator[ServeProc]:
    srv = start_serve(database_url, {"PGQUEUE_ADMIN_PASSWORD": PASSWORD})
    try:
        yield srv
    finally:
        srv.stop()


def _retry_after(resp: object) -> int:
    value = resp.headers.get("retry-after")  # type: ignore[attr-defined]
    assert value is not None and value.isdigit(), value
    return int(value)


def _failures(database_url: str) -> dict[str, int]:
    found = rows(database_url, "SELECT key, failures FROM pgqueue.login_failures")
    return {r["key"]: r["failures"] for r in found}


def _age(database_url: str, key: str, seconds: float) -> None:
    """Move a key's last failure into the past: the lock it set ends as if that time had passed."""
    execute(database_url,
            "UPDATE pgqueue.login_failures SET last_failure_at = last_failure_at - make_interval(secs => %s)"
            " WHERE key = %s", (seconds, key))


def test_the_sixth_wrong_password_gets_429_and_so_does_the_right_one(server: ServeProc) -> None:
    with server.client("127.0.0.2") as client:
        for _ in range(5):
            resp = login(client, WRONG)
            assert resp.status_code == 401, resp.text
        sixth = login(client, WRONG)
        assert sixth.status_code == 429, sixth.text
        assert 1 <= _retry_after(sixth) <= 15
        assert "Too many failed sign-ins" in sixth.text
        # the right password is not even checked while the address waits: no session either
        right = login(client, PASSWORD)
        assert right.status_code == 429 and SESSION_COOKIE not in right.headers.get("set-cookie", "")
        assert not signed_in(client)

    assert _failures(server.database_url) == {"address:127.0.0.2": 5, "account:dashboard": 5}
    log = server.log()
    assert "dashboard login refused from 127.0.0.2" in log
    assert re.search(r"sign-ins from 127\.0\.0\.2 paused for 15 s after 5 failures", log), log[-3000:]
    assert PASSWORD not in log and WRONG not in log


def test_the_lock_is_per_address_and_a_forwarded_header_does_not_move_it(server: ServeProc) -> None:
    with server.client("127.0.0.2") as locked:
        for _ in range(5):
            assert login(locked, WRONG).status_code == 401
        token = login_token(locked)
        # 127.0.0.2 is not a trusted proxy: its X-Forwarded-For is ignored, whatever it claims
        for claimed in ("203.0.113.7", "127.0.0.3", "2001:db8::1"):
            resp = locked.post("/login", data={"login_token": token, "secret": PASSWORD},
                               headers={"x-forwarded-for": claimed})
            assert resp.status_code == 429, claimed
    # another address is not locked by the first one's failures
    with server.client("127.0.0.3") as other:
        assert login(other, PASSWORD).status_code == 303
        assert signed_in(other)
    assert _failures(server.database_url)["address:127.0.0.2"] == 5


def test_the_wait_doubles_with_each_further_failure_and_a_success_clears_it(server: ServeProc) -> None:
    url = server.database_url
    with server.client("127.0.0.2") as client:
        for _ in range(5):
            assert login(client, WRONG).status_code == 401
        assert 14 <= _retry_after(login(client, WRONG)) <= 15

        _age(url, "address:127.0.0.2", 16)  # the 15 s wait is over: one more try is checked
        assert login(client, WRONG).status_code == 401
        assert 29 <= _retry_after(login(client, WRONG)) <= 30  # six failures: 30 s

        _age(url, "address:127.0.0.2", 31)
        assert login(client, PASSWORD).status_code == 303
        assert signed_in(client)
    # the address starts afresh; the account keeps the failures it saw (they decay with time)
    assert _failures(url) == {"account:dashboard": 6}


def test_failures_from_many_addresses_lock_the_account(server: ServeProc) -> None:
    for n in range(10, 15):  # 5 addresses x 4 failures: no address reaches its own limit
        with server.client(f"127.0.0.{n}") as client:
            for _ in range(4):
                assert login(client, WRONG).status_code == 401
    with server.client("127.0.0.20") as fresh:
        resp = login(fresh, PASSWORD)
        assert resp.status_code == 429
        assert 1 <= _retry_after(resp) <= 15
        assert not signed_in(fresh)
    assert _failures(server.database_url)["account:dashboard"] == 20
    assert "sign-ins to the dashboard paused for 15 s after 20 failures" in server.log()

    # once the wait is over the admin signs in; the account keeps 19 failures, so a guesser gains
    # one more try from that, not a fresh twenty
    _age(server.database_url, "account:dashboard", 16)
    with server.client("127.0.0.20") as admin:
        assert login(admin, PASSWORD).status_code == 303
    assert _failures(server.database_url)["account:dashboard"] == 19
    with server.client("127.0.0.21") as guesser:
        assert login(guesser, WRONG).status_code == 401
        assert login(guesser, PASSWORD).status_code == 429


async def test_a_burst_of_300_wrong_passwords_has_5_checked(server: ServeProc) -> None:
    """The defect: 300 wrong passwords in 1.8 s, every one checked. Now the count is taken before
    the password is checked, in one statement under the row lock, so parallel requests cannot all
    slip through before the first failure is recorded."""
    async with server.async_client("127.0.0.2") as client:
        page = await client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        started = time.monotonic()

        async def attempt(i: int) -> int:
            resp = await client.post("/login", data={"login_token": token.group(1), "secret": f"{WRONG}{i}"})
            return resp.status_code

        statuses = Counter(await asyncio.gather(*(attempt(i) for i in range(300))))
        elapsed = time.monotonic() - started
    assert statuses == {401: 5, 429: 295}, statuses
    print(f"300 parallel wrong passwords: {dict(statuses)} in {elapsed:.2f} s")


def test_every_server_process_sees_the_same_counts(server: ServeProc) -> None:
    second = start_serve(server.database_url, {"PGQUEUE_ADMIN_PASSWORD": PASSWORD}, name="pgqueue-serve-2")
    try:
        with server.client("127.0.0.2") as a, second.client("127.0.0.2") as b:
            for client in (a, b, a, b, a):
                assert login(client, WRONG).status_code == 401
            assert login(b, PASSWORD).status_code == 429
            assert login(a, PASSWORD).status_code == 429
    finally:
        second.stop()


def test_an_admin_password_shorter_than_12_characters_stops_the_server(database_url: str) -> None:
    port = free_port()
    proc = start_process(
        "pgqueue-serve-short-password",
        pgqueue_argv("serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port)),
        env={"DATABASE_URL": database_url, "PGQUEUE_SIGNING_KEY": "ab" * 32, "PGQUEUE_EVENT_KEYS": "k",
             "PGQUEUE_ADMIN_PASSWORD": "elevenchars"},
        url=f"http://127.0.0.1:{port}",
    )
    try:
        code = proc.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill9()
        raise
    assert code != 0
    log = proc.log()
    assert "PGQUEUE_ADMIN_PASSWORD must be at least 12 characters long, it has 11" in log, log
    assert "elevenchars" not in log
