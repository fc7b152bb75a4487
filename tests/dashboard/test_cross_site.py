"""A real web page in a real Chromium tries to drive the key-less dev server: from another site
(a tiny HTTP server of its own, reached as evil.example) with the requests a page may send without
a CORS preflight (no-cors fetches with text/plain bodies, form posts, a text/plain form that spells
a JSON registration), and after DNS rebinding (rebind.example resolving to the dev server). Nothing
gets registered or stored, and every request that reached the server was refused by it."""

from __future__ import annotations

import asyncio
import html
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import function, register_body
from tests.compat.conftest import Server, start_server
from tests.dashboard.conftest import CHROMIUM_ARGS
from tests.helpers.procs import free_port

pytestmark = pytest.mark.compat

# Chromium resolves these to loopback: evil.example is the attacker's site, rebind.example the
# attacker's name after it rebound to the dev server's address.
RESOLVER_RULES = "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP rebind.example 127.0.0.1"


def attacker_page(dev_url: str) -> str:
    registration = json.dumps(register_body(function("evil-fn"), app="evil-fetch",
                                            url="http://attacker.example/api/inngest"))
    # A text/plain form posts `name=value`: with this name and value the body is the JSON
    # {..., "x": "="} a lenient parser would take for a registration.
    form_json = json.dumps(register_body(function("evil-fn"), app="evil-form",
                                         url="http://attacker.example/api/inngest"))
    form_name = form_json[:-1] + ', "x": "'
    script = f"""
      const DEV = {json.dumps(dev_url)};
      window.results = [];
      async function attack() {{
        const tries = [["/fn/register", {json.dumps(registration)}],
                       ["/e/dev", JSON.stringify({{name: "evil/fetch", data: {{}}}})],
                       ["/invoke/evil-fn", "{{}}"]];
        for (const [path, body] of tries) {{
          try {{
            await fetch(DEV + path, {{method: "POST", mode: "no-cors",
                                      headers: {{"Content-Type": "text/plain"}}, body}});
            results.push("answered " + path);
          }} catch (e) {{ results.push("failed " + path); }}
        }}
        try {{  // JSON needs a CORS preflight, which the server never grants
          await fetch(DEV + "/fn/register", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                              body: {json.dumps(registration)}}});
          results.push("answered cors json");
        }} catch (e) {{ results.push("blocked cors json"); }}
        document.getElementById("register-form").submit();
        document.getElementById("event-form").submit();
        return results;
      }}
    """
    return f"""<!doctype html><html><head><title>evil</title></head><body>
      <form id="register-form" method="POST" action="{dev_url}/fn/register" enctype="text/plain"
            target="sink1"><input name="{html.escape(form_name)}" value='"}}'></form>
      <form id="event-form" method="POST" action="{dev_url}/e/dev" target="sink2">
        <input name="name" value="evil/form"><input name="data" value="{{}}"></form>
      <iframe name="sink1"></iframe><iframe name="sink2"></iframe>
      <script>{script}</script></body></html>"""


@pytest.fixture
def dev(database_url: str) -> Iterator[Server]:
    server = start_server(database_url, mode="dev")
    try:
        yield server
    finally:
        server.proc.terminate()


@pytest.fixture
def attacker(dev: Server) -> Iterator[str]:
    page = attacker_page(dev.url).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        yield f"http://evil.example:{port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
async def rebinding_browser(chromium_path: Path) -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium_path),
                                     args=[*CHROMIUM_ARGS, RESOLVER_RULES])
        try:
            yield b
        finally:
            await b.close()


def stored(server: Server) -> dict[str, Any]:
    apps = httpx.get(server.url + "/v1/apps", timeout=10).json()["data"]
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.events WHERE name LIKE %s", ("evil/%",)).fetchone()
    assert row is not None
    return {"apps": sorted(a["name"] for a in apps), "evil_events": int(row[0])}


async def test_a_cross_site_page_cannot_register_an_app_or_send_events(
    dev: Server, attacker: str, rebinding_browser: Any
) -> None:
    before = stored(dev)
    assert before == {"apps": [], "evil_events": 0}
    page = await rebinding_browser.new_page()
    await page.goto(attacker)
    results = await page.evaluate("attack()")
    # JSON needs a preflight, which is never granted; the other requests the browser sends (it
    # hides their answers from the page, so the server's log says what happened to them)
    assert "blocked cors json" in results and "answered cors json" not in results, results
    origin = attacker.removesuffix("/")
    expected = [f"refused POST {path} with 403: Origin '{origin}'"
                for path in ("/fn/register", "/e/dev", "/invoke/evil-fn")]

    def refused() -> dict[str, int]:
        log = dev.proc.log()
        return {line: log.count(line) for line in expected}

    for _ in range(100):  # three fetches, then the two form posts (two to /fn/register in all)
        counts = refused()
        if counts[expected[0]] >= 2 and counts[expected[1]] >= 2 and counts[expected[2]] >= 1:
            break
        await asyncio.sleep(0.1)
    assert stored(dev) == before
    assert counts[expected[0]] >= 2 and counts[expected[1]] >= 2 and counts[expected[2]] >= 1, (
        counts, dev.proc.log()[-3000:])

    # DNS rebinding: the attacker's name now points at the dev server, so the page is same-origin
    port = dev.url.rsplit(":", 1)[1]
    rebound = f"http://rebind.example:{port}"
    resp = await page.goto(rebound + "/v1/apps")
    assert resp is not None and resp.status == 421
    assert "PGQUEUE_ALLOWED_HOSTS" in await page.inner_text("body")
    status = await page.evaluate("""async (body) => (await fetch("/fn/register", {method: "POST",
        headers: {"Content-Type": "application/json"}, body})).status""",
        json.dumps(register_body(function("evil-fn"), app="evil-rebind")))
    assert status == 421
    assert stored(dev) == before
    await page.close()
