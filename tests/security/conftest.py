"""Fixtures for the attack tests of issue 22: a real `pgqueue serve` (with its workers) and small
HTTP servers on loopback standing in for an app's endpoint or a provider, which answer as each
test scripts them and record what they were sent."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgqueue import ids
from tests.compat.conftest import Server, start_server
from tests.helpers import stub
from tests.helpers.stub import Answer, Script, Stub, json_answer

__all__ = ["Answer", "Stub", "json_answer", "run_status", "start_endpoint_run"]


@pytest.fixture
def stub_factory() -> Iterator[Callable[[Script], Stub]]:
    with contextlib.ExitStack() as stack:
        yield lambda script: stack.enter_context(stub.running(script))


@pytest.fixture
def serve_factory(database_url: str) -> Iterator[Callable[..., Server]]:
    """`pgqueue serve` with its workers (PGQUEUE_ALLOW_LOOPBACK=1: the stubs are on loopback)."""
    started: list[Server] = []

    def make(env: dict[str, str] | None = None) -> Server:
        server = start_server(database_url, mode="serve", env=env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.proc.terminate()


def start_endpoint_run(server: Server, domain: str, steps: list[dict[str, Any]], *, retries: int = 0,
                       path: str = "/api/endpoint") -> dict[str, Any]:
    """Start a durable endpoint's run as the JS SDK does (POST /v1/checkpoint with the signing key):
    the answer's data ({run_id, fn_id, app_id, token, ...})."""
    run_id = ids.new_ulid()
    request = {"domain": domain, "method": "POST", "path": path}
    body = {"run_id": run_id, "retries": retries, "steps": steps,
            "event": {"name": "inngest/http.request", "data": request}}
    with server.client() as client:
        started = client.post("/v1/checkpoint", json=body)
    assert started.status_code == 200, started.text
    data = dict(started.json()["data"])
    assert data["run_id"] == run_id
    return data


def run_status(server: Server, run_id: str) -> dict[str, Any] | None:
    """The run as GET /v1/runs/{id} shows it once it has ended, else None."""
    with server.client() as client:
        r = client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    run = dict(r.json()["data"])
    return None if run["status"] in ("Queued", "Running") else run

