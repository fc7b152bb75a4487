"""Fixtures for the compatibility suite: a real `pgqueue dev|serve` process and real SDK apps."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.helpers.procs import Proc, free_port, pgqueue_argv, start_process, wait_http, wait_until

SIGNING_KEY = "signkey-test-" + "a1b2c3d4" * 8
EVENT_KEY = "compat-event-key"
PY_APP_FUNCTIONS = 32  # thirty-one functions plus the onFailure handler

# Test-only speed-ups: retries in milliseconds, fast polls, short leases.
FAST_ENV = {
    "PGQUEUE_BACKOFF_SCALE": "0.002",
    "PGQUEUE_POLL_INTERVAL_MS": "200",
    "PGQUEUE_LEASE_MS": "5000",
    "PGQUEUE_SHUTDOWN_GRACE_S": "5",
    "PGQUEUE_LOG_LEVEL": "info",
}


@dataclass
class Server:
    proc: Proc
    url: str
    mode: str
    database_url: str
    headers: dict[str, str] = field(default_factory=dict)
    event_key: str = EVENT_KEY

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def send(self, name: str, data: dict[str, Any] | None = None, **extra: Any) -> str:
        with self.client() as c:
            r = c.post(f"/e/{self.event_key}", json={"name": name, "data": data or {}, **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["ids"][0])

    def runs_for(self, event_id: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.get(f"/v1/events/{event_id}/runs")
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    def wait_runs(
        self, event_id: str, *, count: int = 1, timeout: float = 30, terminal: bool = True
    ) -> list[dict[str, Any]]:
        def done() -> list[dict[str, Any]] | None:
            runs = self.runs_for(event_id)
            if len(runs) < count:
                return None
            if terminal and any(r["status"] in ("Queued", "Running") for r in runs):
                return None
            return runs

        return wait_until(done, timeout=timeout, message=f"{count} finished run(s) for event {event_id}")

    def functions(self, app: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.get(f"/v1/apps/{app}/functions")
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    def get(self, path: str) -> Any:
        with self.client() as c:
            r = c.get(path)
        assert r.status_code == 200, r.text
        return r.json()


def start_server(
    database_url: str,
    *,
    mode: str = "dev",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Server:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**FAST_ENV, "DATABASE_URL": database_url, **(env or {})}
    args = [mode, "--port", str(port), "--host", "127.0.0.1", *extra_args]
    headers: dict[str, str] = {}
    if mode == "serve":
        # The test apps listen on loopback, which production mode refuses unless allowed.
        full_env.setdefault("PGQUEUE_SIGNING_KEY", SIGNING_KEY)
        full_env.setdefault("PGQUEUE_EVENT_KEYS", EVENT_KEY)
        full_env.setdefault("PGQUEUE_ALLOW_LOOPBACK", "1")
        # ... and so do the services their step.fetch / step.ai.infer reach (tests/compat/upstream_stub.py).
        full_env.setdefault("PGQUEUE_FETCH_ALLOWED_NETWORKS", "127.0.0.0/8")
        args.append("--migrate")
        headers["authorization"] = f"Bearer {full_env['PGQUEUE_SIGNING_KEY']}"
    proc = start_process(f"pgqueue-{mode}", pgqueue_argv(*args), env=full_env, url=url)
    wait_http(proc, "/health", timeout=60)
    return Server(proc, url, mode, database_url, headers)


@pytest.fixture
def server_factory(database_url: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(mode: str = "dev", **kwargs: Any) -> Server:
        srv = start_server(database_url, mode=mode, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.proc.terminate()


@dataclass
class App:
    proc: Proc
    url: str  # serve URL
    app_id: str
    base: str

    def ledger(self) -> dict[str, Any]:
        r = httpx.get(self.base + "/ledger", timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def count(self, run_id: str, step: str) -> int:
        return len(self.ledger()["ledger"].get(f"{run_id}:{step}", []))


def start_worker(database_url: str, server: Server) -> Proc:
    """A second process running the runner and the executor (`pgqueue worker`) next to `server`."""
    return start_process("pgqueue-worker", pgqueue_argv("worker"),
                         env={"DATABASE_URL": database_url, "PGQUEUE_POLL_INTERVAL_MS": "200",
                              "PGQUEUE_BACKOFF_SCALE": "0.002", "PGQUEUE_LEASE_MS": "5000"},
                         url=server.url)


def sdk_env(server: Server, *, production: bool) -> dict[str, str]:
    env = {"INNGEST_BASE_URL": server.url}
    if production:
        env.update(INNGEST_SIGNING_KEY=SIGNING_KEY, INNGEST_EVENT_KEY=EVENT_KEY, INNGEST_DEV="0")
    else:
        env.update(INNGEST_DEV=server.url)
    return env


def start_py_app(
    server: Server,
    *,
    app_id: str = "py-compat",
    production: bool | None = None,
    env: dict[str, str] | None = None,
) -> App:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prod = server.mode == "serve" if production is None else production
    full_env = {**sdk_env(server, production=prod), "PY_APP_ID": app_id, **(env or {})}
    for var in ("INNGEST_SIGNING_KEY", "INNGEST_EVENT_KEY"):
        if not prod:
            full_env.setdefault(var, "")
    argv = [sys.executable, "-m", "uvicorn", "tests.compat.apps.py_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    proc = start_process(f"py-app-{app_id}", argv, env=full_env, url=base)
    wait_http(proc, "/ledger", timeout=60)
    return App(proc, base + "/api/inngest", app_id, base)


def sync_via_put(app: App, server: Server, *, expect_functions: int) -> list[dict[str, Any]]:
    """The SDK's own path: a PUT to the serve URL makes the SDK call /fn/register.
    The Python SDK answers the PUT with 200 even when registration failed, so check the server."""
    httpx.put(app.url, timeout=30)
    deadline = time.monotonic() + 20
    fns: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        fns = server.functions(app.app_id)
        if len(fns) >= expect_functions:
            return fns
        time.sleep(0.2)
    raise AssertionError(f"app {app.app_id} did not sync: {fns}\n{server.proc.log()}")


@pytest.fixture
def apps_started() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.proc.terminate()


def env_get(name: str) -> str | None:
    return os.environ.get(name)


def server_for_mode(request: pytest.FixtureRequest, database_url: str, mode: str) -> Server:
    """`dev`, `serve`, or `pgbouncer`: dev mode through PgBouncer in transaction mode (no
    prepared statements, no LISTEN, no session state)."""
    if mode == "pgbouncer":
        bouncer = request.getfixturevalue("pgbouncer")
        return start_server(bouncer.url_for(database_url), mode="dev", env={"PGQUEUE_POOLER": "1"})
    return start_server(database_url, mode=mode)


STACK_MODES = ["dev", "serve", "pgbouncer"]


@contextlib.contextmanager
def synced_py_app(server: Server) -> Iterator[tuple[Server, App]]:
    """The official-Python-SDK app (apps/py_app.py) started and synced with `server`; both stopped
    on the way out."""
    app = None
    try:
        app = start_py_app(server)
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


@pytest.fixture(scope="module", params=STACK_MODES)
def py_stack(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    """One pgqueue server and one official-Python-SDK app, synced, per mode."""
    with synced_py_app(server_for_mode(request, module_database_url, request.param)) as stack:
        yield stack
