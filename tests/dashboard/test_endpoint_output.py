"""A durable endpoint's output opened in a signed-in Chromium (issue 22, case 1): the app's response,
served by `GET /v1/http/runs/{id}/output`, must never become script of the dashboard's origin.

Against a real `pgqueue serve` (real HTTP, real PostgreSQL): three runs are started through the SDK
route `POST /v1/checkpoint` with the signing key, as an app (or whoever its users make it echo)
could. One run's output is JavaScript that reads the signed-in dashboard's CSRF token and posts
`/ui/events/send`; a second run's HTML loads the first with `<script src>` (which `script-src 'self'`
would allow); a third sends its own `Content-Security-Policy: script-src 'unsafe-inline'` with an
inline script and a `Set-Cookie` for pgqueue's origin. Opened by the operator's signed-in browser,
no script runs, no cookie is stored and no event is sent.

With `PGQUEUE_ENDPOINT_OUTPUT_ORIGIN`, outputs are served from that other origin (here the same
server reached as `outputs.test`, a name Chromium maps to loopback): pgqueue's own origin redirects
there, active content runs there, and it reaches nothing of the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgqueue import ids
from tests.dashboard.conftest import CHROMIUM_ARGS
from tests.helpers.procs import free_port
from tests.helpers.serve import BEARER, ServeProc, rows, start_serve

pytestmark = pytest.mark.compat

ADMIN_PASSWORD = "endpoint-output-admin-password"
OUTPUT_HOST = "outputs.test"

# What an attacker's script does once it runs on pgqueue's origin: say so on the console, then
# read the signed-in dashboard's CSRF token and send an event with it.
ATTACK = """
console.log("PWNED " + document.currentScript?.dataset.which);
(async () => {
  const page = await (await fetch("/events", {credentials: "include"})).text();
  const token = page.match(/name="csrf_token" value="([^"]+)"/)[1];
  const form = new URLSearchParams({csrf_token: token, name: "evil/xss", data: "{}"});
  const sent = await fetch("/ui/events/send", {method: "POST", body: form, credentials: "include"});
  console.log("SENT " + sent.status);
})().catch((e) => console.log("FAILED " + e));
"""


def _endpoint_run(server: ServeProc, output: dict[str, Any]) -> str:
    """A durable endpoint's run that completed with `output` ({status, headers, body}): the path of
    its output with the run's token, as the SDK's redirect names it."""
    run_id = ids.new_ulid()
    body = {"run_id": run_id,
            "event": {"name": "inngest/http.request",
                      "data": {"domain": "http://app.test", "method": "GET", "path": "/evil"}},
            "steps": [{"op": "RunComplete", "id": "complete", "data": output}]}
    with server.client() as client:
        started = client.post("/v1/checkpoint", json=body, headers=BEARER)
    assert started.status_code == 200, started.text
    token = started.json()["data"]["token"]
    return f"/v1/http/runs/{run_id}/output?token={token}"


def _malicious_runs(server: ServeProc) -> dict[str, str]:
    script = _endpoint_run(server, {"status": 200, "headers": {"Content-Type": "application/javascript"},
                                    "body": ATTACK})
    loader = _endpoint_run(server, {
        "status": 200, "headers": {"Content-Type": "text/html; charset=utf-8"},
        "body": f'<!doctype html><title>loader</title><script data-which="loaded" src="{script}"></script>',
    })
    inline = _endpoint_run(server, {
        "status": 200,
        "headers": {"Content-Type": "text/html; charset=utf-8",
                    "Content-Security-Policy": "script-src 'unsafe-inline'",
                    "Set-Cookie": "pgqueue_login=planted; Path=/",
                    "X-Frame-Options": "ALLOWALL"},
        "body": f'<!doctype html><title>inline</title><script data-which="inline">{ATTACK}</script>',
    })
    return {"script": script, "loader": loader, "inline": inline}


def _evil_events(server: ServeProc) -> int:
    [row] = rows(server.database_url, "SELECT count(*) AS n FROM pgqueue.events WHERE name = 'evil/xss'")
    return int(row["n"])


@pytest.fixture
def serve(database_url: str) -> Iterator[ServeProc]:
    server = start_serve(database_url, {"PGQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mapped_browser(chromium_path: Path) -> Any:
    """Chromium resolving outputs.test to loopback: a second name (and origin) for the server."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        rules = f"--host-resolver-rules=MAP {OUTPUT_HOST} 127.0.0.1"
        b = await pw.chromium.launch(executable_path=str(chromium_path), args=[*CHROMIUM_ARGS, rules])
        try:
            yield b
        finally:
            await b.close()


async def _signed_in_page(browser: Any, server: ServeProc) -> tuple[Any, list[str]]:
    context = await browser.new_context()
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    await page.goto(server.url + "/runs")
    await page.wait_for_url("**/login?next=%2Fruns")
    await page.fill('input[name="secret"]', ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/runs")
    return page, console


async def test_a_signed_in_browser_runs_no_script_of_an_endpoint_output(
    serve: ServeProc, browser: Any
) -> None:
    runs = _malicious_runs(serve)
    page, console = await _signed_in_page(browser, serve)
    for name in ("loader", "inline", "script"):
        resp = await page.goto(serve.url + runs[name])
        assert resp is not None and resp.status == 200, name
        await page.wait_for_timeout(500)
    # Nothing ran, so nothing was sent; the output's cookie was not stored for pgqueue's origin.
    assert not [line for line in console if line.startswith(("PWNED", "SENT"))], console
    assert _evil_events(serve) == 0
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    assert "pgqueue_login" not in cookies, cookies
    assert "pgqueue_session" in cookies  # still signed in: the test did not pass by losing the session
    await page.context.close()


def test_the_output_is_sandboxed_whatever_the_run_stored(serve: ServeProc) -> None:
    runs = _malicious_runs(serve)
    with serve.client() as client:
        for name, path in runs.items():
            resp = client.get(path)
            assert resp.status_code == 200, (name, resp.text)
            policy = resp.headers["content-security-policy"]
            assert "sandbox" in [d.strip() for d in policy.split(";")], (name, policy)
            assert "unsafe-inline" not in policy.replace("style-src 'unsafe-inline'", ""), policy
            assert len(resp.headers.get_list("content-security-policy")) == 1, name
            assert "set-cookie" not in resp.headers, name
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["x-content-type-options"] == "nosniff"
        # A browser loading an output as a script (or a worker, a stylesheet) is refused, before the
        # body: the output is a document or data for a client, never a subresource of a page.
        for dest in ("script", "worker", "sharedworker", "serviceworker", "style"):
            refused = client.get(runs["script"], headers={"sec-fetch-dest": dest})
            assert refused.status_code == 403, (dest, refused.text)
            assert refused.json()["status"] == 403 and "sec-fetch-dest" in refused.json()["error"].lower()
        for dest in ("document", "empty"):
            assert client.get(runs["script"], headers={"sec-fetch-dest": dest}).status_code == 200


@pytest.fixture
def serve_with_output_origin(database_url: str) -> Iterator[tuple[ServeProc, str]]:
    port = free_port()
    origin = f"http://{OUTPUT_HOST}:{port}"
    server = start_serve(database_url, {"PGQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                                        "PGQUEUE_ENDPOINT_OUTPUT_ORIGIN": origin}, port=port)
    try:
        yield server, origin
    finally:
        server.stop()


async def test_outputs_on_their_own_origin_run_there_and_reach_nothing_of_the_dashboard(
    serve_with_output_origin: tuple[ServeProc, str], mapped_browser: Any
) -> None:
    server, origin = serve_with_output_origin
    runs = _malicious_runs(server)
    # pgqueue's own origin answers an output with a redirect to the output origin, with the token.
    with server.client() as client:
        moved = client.get(runs["inline"])
    assert moved.status_code == 307, moved.text
    assert moved.headers["location"] == origin + runs["inline"]
    # The output origin serves outputs only: no dashboard, no login, no API.
    port = origin.rsplit(":", 1)[1]
    for path in ("/runs", "/login", "/v1/runs", "/"):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as raw:
            resp = raw.get(path, headers={"host": f"{OUTPUT_HOST}:{port}"})
        assert resp.status_code == 404, (path, resp.status_code)
        assert "output" in resp.json()["error"]

    page, console = await _signed_in_page(mapped_browser, server)
    resp = await page.goto(server.url + runs["inline"])
    assert resp is not None and resp.status == 200
    assert page.url.startswith(origin)
    await page.wait_for_timeout(1000)
    # Active content runs on the output origin (apps that need it may), but it can read nothing of
    # the dashboard there, and the dashboard's origin got no cookie.
    assert any(line.startswith("PWNED") for line in console), console
    assert not [line for line in console if line.startswith("SENT")], console
    assert _evil_events(server) == 0
    cookies = {(c["domain"], c["name"]) for c in await page.context.cookies()}
    assert ("127.0.0.1", "pgqueue_login") not in cookies, cookies
    assert not [name for domain, name in cookies if domain == OUTPUT_HOST], cookies
    await page.context.close()
