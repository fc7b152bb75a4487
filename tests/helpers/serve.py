"""A real `pgqueue serve` process on loopback for the login and session tests, and HTTP clients that
connect from a chosen loopback address (127.0.0.2, 127.0.0.3, ...): the server sees distinct socket
peers, with no forwarded header involved (uvicorn trusts X-Forwarded-For only from 127.0.0.1/::1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.helpers.procs import Proc, free_port, pgqueue_argv, start_process, wait_http

SIGNING_KEY = "signkey-prod-" + "5e55107c" * 8
EVENT_KEY = "session-test-event-key"
BEARER = {"authorization": f"Bearer {SIGNING_KEY}"}
SESSION_COOKIE = "pgqueue_session"


@dataclass
class ServeProc:
    proc: Proc
    url: str
    database_url: str

    def client(self, address: str = "127.0.0.2") -> httpx.Client:
        """A client whose connections come from `address` (any 127.x.y.z works on Linux)."""
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, transport=transport, timeout=30)

    def async_client(self, address: str = "127.0.0.2", **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits(max_connections=50))
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=60, **kwargs)

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate(timeout=20)


def start_serve(
    database_url: str, env: dict[str, str] | None = None, *, name: str = "pgqueue-serve",
    port: int | None = None,
) -> ServeProc:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {
        "DATABASE_URL": database_url,
        "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
        "PGQUEUE_EVENT_KEYS": EVENT_KEY,
        "PGQUEUE_LOG_LEVEL": "info",
        "PGQUEUE_SHUTDOWN_GRACE_S": "2",
        **(env or {}),
    }
    argv = pgqueue_argv("serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port))
    proc = start_process(name, argv, env=full_env, url=url)
    wait_http(proc, "/health", timeout=60)
    return ServeProc(proc, url, database_url)


def login_token(client: httpx.Client) -> str:
    page = client.get("/login")
    assert page.status_code == 200, page.text
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def login(client: httpx.Client, secret: str, *, next_path: str = "/runs") -> httpx.Response:
    token = login_token(client)
    return client.post("/login", data={"login_token": token, "secret": secret, "next": next_path})


def csrf(client: httpx.Client, path: str = "/runs") -> str:
    page = client.get(path)
    assert page.status_code == 200, (page.status_code, page.headers.get("location"))
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def signed_in(client: httpx.Client) -> bool:
    """Whether the client's session opens a dashboard page (200) or is sent to the login (303)."""
    resp = client.get("/runs")
    assert resp.status_code in (200, 303), resp.status_code
    if resp.status_code == 303:
        assert resp.headers["location"].startswith("/login")
    return resp.status_code == 200


def with_cookie(server: ServeProc, cookie: str, address: str = "127.0.0.2") -> httpx.Client:
    """A fresh client that presents a session cookie captured elsewhere (another browser, a thief)."""
    client = server.client(address)
    client.cookies.set(SESSION_COOKIE, cookie)
    return client


def rows(database_url: str, query: Any, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query, params).fetchall())


def execute(database_url: str, query: Any, params: Any = None) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(query, params)
