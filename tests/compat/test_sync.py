"""Server-initiated sync with the official Python SDK: `-u` at start-up and POST /v1/apps/sync."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, Server, start_py_app, start_server
from tests.helpers.procs import free_port, start_process, wait_http, wait_until

pytestmark = pytest.mark.compat


def _wait_synced(server: Server, app_id: str) -> list[dict]:
    return wait_until(lambda: len(server.functions(app_id)) == PY_APP_FUNCTIONS and server.functions(app_id),
                      timeout=30, message=f"{app_id} synced")


def test_dev_syncs_u_urls_at_start_up_retrying_until_reachable(database_url: str) -> None:
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    # The server starts first and keeps trying until the app is up.
    server = start_server(database_url, extra_args=("-u", app_url))
    env = {"INNGEST_DEV": server.url, "INNGEST_BASE_URL": server.url, "PY_APP_ID": "py-u",
           "INNGEST_SIGNING_KEY": "", "INNGEST_EVENT_KEY": ""}
    proc = start_process("py-app-u", [sys.executable, "-m", "uvicorn", "tests.compat.apps.py_app:app",
                                      "--host", "127.0.0.1", "--port", str(app_port)],
                         env=env, url=f"http://127.0.0.1:{app_port}")
    try:
        wait_http(proc, "/ledger")
        fns = _wait_synced(server, "py-u")
        assert any(f["slug"] == "py-u-three-steps" for f in fns)
        event_id = server.send("compat/three")
        [run] = server.wait_runs(event_id)
        assert run["status"] == "Completed"
    finally:
        proc.terminate()
        server.proc.terminate()


@pytest.mark.parametrize("mode", ["dev", "serve"])
def test_sync_by_url_through_the_rest_api(database_url: str, mode: str) -> None:
    server = start_server(database_url, mode=mode)
    app = None
    try:
        app = start_py_app(server, app_id=f"py-sync-{mode}")
        with server.client() as c:
            r = c.post("/v1/apps/sync", json={"url": app.url})
        assert r.status_code == 200, r.text
        fns = _wait_synced(server, f"py-sync-{mode}")
        assert len(fns) == PY_APP_FUNCTIONS
        # The app's URL and SDK are recorded.
        apps = server.get("/v1/apps")["data"]
        [record] = [a for a in apps if a["name"] == f"py-sync-{mode}"]
        assert record["url"] == app.url and record["sdk_language"] == "py"
        # An unreachable app is a clear 400, not a 500.
        with server.client() as c:
            r = c.post("/v1/apps/sync", json={"url": f"http://127.0.0.1:{free_port()}/api/inngest"})
        assert r.status_code == 400 and "could not reach" in r.json()["error"]
        with server.client() as c:
            r = c.post("/v1/apps/sync", json={"url": "ftp://example"})
        assert r.status_code == 400 and r.json()["status"] == 400
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def test_sync_put_without_server_kind_mismatch_in_serve_mode(database_url: str) -> None:
    """A server-initiated PUT from a production server is signed and says `cloud`; a dev-mode SDK
    would refuse it, so the production app (cloud mode) accepts it and registers."""
    server = start_server(database_url, mode="serve")
    app = start_py_app(server, app_id="py-kind", production=True)
    try:
        with server.client() as c:
            r = c.post("/v1/apps/sync", json={"url": app.url})
        assert r.status_code == 200, r.text
        _wait_synced(server, "py-kind")
        # Without the bearer key, the REST call itself is refused.
        r = httpx.post(f"{server.url}/v1/apps/sync", json={"url": app.url})
        assert r.status_code == 401
    finally:
        app.proc.terminate()
        server.proc.terminate()
