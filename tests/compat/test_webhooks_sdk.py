"""Webhooks and delayed runs end to end with the official SDKs, against `pgqueue serve`: a GitHub
push (signed) through its transform to a Python SDK function's run, a Stripe event (signed) to a
JS SDK function's run, and a future `ts` whose first step starts at `ts`, not before, in both."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat.conftest import App, Server, sdk_env, start_server, sync_via_put
from tests.compat.js_fixtures import ensure_js_app_installed, start_js_app
from tests.helpers import webhook_signing as sign
from tests.helpers.procs import free_port, start_process, wait_http

SECRET = "github-webhook-secret"
STRIPE_SECRET = "whsec_test_stripe"


@pytest.fixture(scope="module")
def stack(module_database_url: str) -> Iterator[tuple[Server, App, App]]:
    ensure_js_app_installed()
    server = start_server(module_database_url, mode="serve")
    started: list[App] = []
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**sdk_env(server, production=True), "PY_APP_ID": "py-hooks"}
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.compat.apps.py_hooks_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        proc = start_process("py-hooks", argv, env=env, url=base)
        py = App(proc, base + "/api/inngest", "py-hooks", base)
        started.append(py)
        wait_http(proc, "/ledger", timeout=60)
        sync_via_put(py, server, expect_functions=2)
        js = start_js_app(server, app_id="js-hooks", script="hooks.js")
        started.append(js)
        sync_via_put(js, server, expect_functions=2)
        yield server, py, js
    finally:
        for app in started:
            app.proc.terminate()
        server.proc.terminate()


def _webhook(server: Server, **body: Any) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/v1/webhooks", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


def _deliver(hook: dict[str, Any], body: bytes, headers: dict[str, str]) -> list[str]:
    r = httpx.post(
        hook["url"], content=body, headers={"content-type": "application/json", **headers}, timeout=30
    )
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


def test_a_signed_github_push_runs_a_python_sdk_function(stack: tuple[Server, App, App]) -> None:
    server, _, _ = stack
    hook = _webhook(
        server, name="GitHub", transform=sign.GITHUB_TRANSFORM, verify={"scheme": "github", "secret": SECRET}
    )
    body = json.dumps(sign.GITHUB_PUSH).encode()
    [event_id] = _deliver(
        hook, body, {**sign.github(SECRET, body), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    )
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == "octocat pushed 1 to octocat/Hello-World"
    bad = httpx.post(hook["url"], content=body, headers=sign.github("wrong", body), timeout=30)
    assert bad.status_code == 401 and "does not match" in bad.json()["error"]


def test_a_signed_stripe_event_runs_a_js_sdk_function(stack: tuple[Server, App, App]) -> None:
    server, _, _ = stack
    hook = _webhook(
        server,
        name="Stripe",
        transform=sign.STRIPE_TRANSFORM,
        verify={"scheme": "stripe", "secret": STRIPE_SECRET},
    )
    body = json.dumps(sign.STRIPE_EVENT).encode()
    [event_id] = _deliver(hook, body, sign.stripe(STRIPE_SECRET, body))
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == "2000 usd from cus_9s6XKzkNRiz8i3"


@pytest.mark.parametrize(("which", "name"), [("py", "hooks/later"), ("js", "hooks-js/later")])
def test_a_future_ts_starts_the_first_step_at_ts_not_before(
    stack: tuple[Server, App, App],
    which: str,
    name: str,
) -> None:
    server, py, js = stack
    app = py if which == "py" else js
    ts = int(time.time() * 1000) + 6_000
    event_id = server.send(name, {"n": 1}, ts=ts)
    [waiting] = server.wait_runs(event_id, timeout=10, terminal=False)
    assert waiting["status"] == "Queued"  # the run exists at once, its first call waits for ts
    assert app.ledger()["starts"] == {}
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    started = run["output"]["started"]
    assert run["output"]["ts"] == ts
    assert started * 1000 >= ts, started * 1000 - ts
    assert started * 1000 < ts + 10_000
