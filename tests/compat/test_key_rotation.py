"""Signing-key rotation with the official Python and JS SDKs: an app still on the previous key keeps working
while the server lists it as the fallback, and stops once the fallback is removed. Responses the
SDK signs are verified against the server's keys."""

from __future__ import annotations

import httpx
import pytest

from tests.compat.conftest import EVENT_KEY, PY_APP_FUNCTIONS, start_py_app, start_server, sync_via_put
from tests.compat.js_fixtures import JS_FUNCTION_COUNT, start_js_app

pytestmark = pytest.mark.compat

OLD = "signkey-prod-" + "0123456789abcdef" * 4
NEW = "signkey-prod-" + "fedcba9876543210" * 4


def test_app_on_the_previous_key_works_until_the_fallback_is_removed(database_url: str) -> None:
    rotating = {"PGQUEUE_SIGNING_KEY": NEW, "PGQUEUE_SIGNING_KEY_FALLBACK": OLD}
    server = start_server(database_url, mode="serve", env=rotating)
    app = start_py_app(server, app_id="py-rot", production=True, env={"INNGEST_SIGNING_KEY": OLD})
    try:
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)  # the SDK's bearer: hash of OLD
        event_id = server.send("compat/three", {"echo": "rotating"})
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed" and run["output"]["echo"] == "rotating"
    finally:
        server.proc.terminate()
    server = start_server(database_url, mode="serve", env={"PGQUEUE_SIGNING_KEY": NEW})
    try:
        # Registration with the old key is refused now...
        r = httpx.post(f"{server.url}/fn/register", json={"appName": "x", "url": "http://127.0.0.1:9", "functions": []},
                       headers={"authorization": f"Bearer {OLD}"})
        assert r.status_code == 401
        # ...and the app refuses calls signed with the new key, so its runs fail.
        event_id = server.send("compat/three", {"echo": "after"})
        [run] = server.wait_runs(event_id, timeout=60)
        assert run["status"] == "Failed"
        assert "401" in run["error"]["message"] or "Unauthorized" in str(run["error"])
        assert EVENT_KEY
    finally:
        app.proc.terminate()
        server.proc.terminate()


def test_js_app_on_the_previous_key_works_until_the_fallback_is_removed(database_url: str) -> None:
    """The same rotation with the official JS SDK."""
    rotating = {"PGQUEUE_SIGNING_KEY": NEW, "PGQUEUE_SIGNING_KEY_FALLBACK": OLD}
    server = start_server(database_url, mode="serve", env=rotating)
    app = start_js_app(server, app_id="js-rot", production=True, env={"INNGEST_SIGNING_KEY": OLD})
    try:
        sync_via_put(app, server, expect_functions=JS_FUNCTION_COUNT)
        event_id = server.send("compat/three", {"echo": "rotating"})
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed" and run["output"]["echo"] == "rotating", run
    finally:
        server.proc.terminate()
    server = start_server(database_url, mode="serve", env={"PGQUEUE_SIGNING_KEY": NEW})
    try:
        event_id = server.send("compat/three", {"echo": "after"})
        [run] = server.wait_runs(event_id, timeout=60)
        assert run["status"] == "Failed", run
    finally:
        app.proc.terminate()
        server.proc.terminate()


def test_js_app_with_the_new_key_and_the_old_as_fallback_accepts_the_old_servers_calls(
    database_url: str,
) -> None:
    """Rotating the app first: the SDK's INNGEST_SIGNING_KEY_FALLBACK lets a server still on the
    previous key sync it and call it."""
    server = start_server(database_url, mode="serve", env={"PGQUEUE_SIGNING_KEY": OLD})
    app = start_js_app(server, app_id="js-rot2", production=True,
                       env={"INNGEST_SIGNING_KEY": NEW, "INNGEST_SIGNING_KEY_FALLBACK": OLD})
    try:
        sync_via_put(app, server, expect_functions=JS_FUNCTION_COUNT)
        event_id = server.send("compat/three", {"echo": "app first"})
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed" and run["output"]["echo"] == "app first", run
    finally:
        app.proc.terminate()
        server.proc.terminate()
