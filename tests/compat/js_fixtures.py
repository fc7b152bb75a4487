"""Fixtures for the official JS SDK app (tests/compat/js_app): install it, start it, sync it.

The JS twin of `start_py_app` / `py_stack` in tests/compat/conftest.py. The app is configured only
through the SDK's standard environment variables, as a user would point it at pgqueue. Test
modules import the fixtures they use from here (`from tests.compat.js_fixtures import js_stack`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import (
    STACK_MODES,
    App,
    Server,
    sdk_env,
    server_for_mode,
    sync_via_put,
)
from tests.helpers.procs import free_port, start_process, wait_http

JS_APP_DIR = Path(__file__).resolve().parent / "js_app"

# Twenty-four functions in server.js plus the `always-fails-failure` function the SDK registers for
# the onFailure handler.
JS_FUNCTION_COUNT = 25

_installed = False


def ensure_js_app_installed() -> None:
    """Install the JS app's pinned dependencies once per session (`npm ci`), unless already there.

    Never skips: a missing node/npm or a failed install fails the test with what to do about it.
    """
    global _installed
    if _installed:
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the JS compatibility tests need Node.js 20+ and npm on PATH "
            f"(node: {node or 'missing'}, npm: {npm or 'missing'})",
            pytrace=False,
        )
    if not (JS_APP_DIR / "node_modules" / "inngest" / "package.json").is_file():
        lock = (JS_APP_DIR / "package-lock.json").is_file()
        argv = [npm, "ci" if lock else "install", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                argv, cwd=JS_APP_DIR, capture_output=True, text=True, timeout=600, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(argv[1:])}` in {JS_APP_DIR} (npm) timed out after 600s", pytrace=False)
        if done.returncode != 0:
            pytest.fail(
                f"`npm {argv[1]}` in {JS_APP_DIR} failed with exit code {done.returncode}; "
                f"the JS compatibility tests need the npm registry or a populated node_modules:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                pytrace=False,
            )
    _installed = True


def start_js_app(
    server: Server,
    *,
    app_id: str = "js-compat",
    production: bool | None = None,
    env: dict[str, str] | None = None,
    script: str = "server.js",
    port: int | None = None,
) -> App:
    """Start `node <script>` (server.js, or flow.js for flow control) pointed at `server` (cloud mode
    with keys for `serve`, dev mode otherwise), on `port` (a free one by default)."""
    ensure_js_app_installed()
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    prod = server.mode == "serve" if production is None else production
    full_env = {**sdk_env(server, production=prod), "JS_APP_ID": app_id, "PORT": str(port), **(env or {})}
    for var in ("INNGEST_SIGNING_KEY", "INNGEST_EVENT_KEY"):
        if not prod:
            full_env.setdefault(var, "")
    node = shutil.which("node") or "node"
    proc = start_process(f"js-app-{app_id}", [node, script], env=full_env, url=base, cwd=JS_APP_DIR)
    wait_http(proc, "/ledger", timeout=60)
    return App(proc, base + "/api/inngest", app_id, base)


@pytest.fixture(scope="module", params=STACK_MODES)
def js_stack(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    """One pgqueue server and one official-JS-SDK app, synced, per mode."""
    ensure_js_app_installed()
    server = server_for_mode(request, module_database_url, request.param)
    app = None
    try:
        app = start_js_app(server)
        sync_via_put(app, server, expect_functions=JS_FUNCTION_COUNT)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()
