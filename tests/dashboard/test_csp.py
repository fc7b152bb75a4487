"""The dashboard under its Content-Security-Policy in a real Chromium: every page renders and its
script runs (live toggle, relative times, a form action and its flash message) without a single
policy violation, /docs included; and another site cannot frame it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import function, register_body
from tests.compat.conftest import Server, start_server

pytestmark = pytest.mark.compat

# Collects every CSP violation the page reports, from the first script on.
VIOLATIONS = """
  window.__violations = [];
  document.addEventListener("securitypolicyviolation",
    (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture
def dev(database_url: str) -> Iterator[Server]:
    server = start_server(database_url, mode="dev")
    try:
        yield server
    finally:
        server.proc.terminate()


async def test_every_page_works_under_the_policy(dev: Server, browser: Any) -> None:
    body = register_body(function("csp-fn", **{"concurrency": [{"limit": 1}]}), app="csp-app")
    assert httpx.post(dev.url + "/fn/register", json=body, timeout=10).status_code == 200
    event_id = dev.send("shop/order.created", {"n": 1})
    console: list[str] = []
    page = await browser.new_page()
    page.on("console", lambda m: console.append(m.text))
    await page.add_init_script(VIOLATIONS)
    for path in ("/", "/apps", "/functions/csp-fn", "/runs", "/events", f"/events/{event_id}", "/runs/nope",
                 "/docs", "/bulk", "/runs?q=event.data.n+%3D%3D+1", "/events?q=event.data.n+%3E+0", "/?chart=24h"):
        resp = await page.goto(dev.url + path)
        assert resp is not None and resp.status in (200, 404), path
        assert await page.evaluate("window.__violations") == [], path
    # the script runs: relative times, the live toggle, a form post with its flash message
    await page.goto(dev.url + "/events")
    assert await page.locator("time[data-relative]").count() >= 1
    assert "ago" in await page.inner_text("time[data-relative] >> nth=0") or \
        "just now" in await page.inner_text("time[data-relative] >> nth=0")
    await page.click("#live-toggle")
    assert (await page.inner_text("#live-toggle .label")).strip() == "Paused"
    await page.click("#live-toggle")
    await page.click("#send-event summary")
    await page.fill('input[name="name"]', "shop/from-the-browser")
    await page.fill('textarea[name="data"]', json.dumps({"n": 2}))
    await page.click("text=Send event")
    await page.wait_for_selector(".flash.ok")
    assert await page.evaluate("window.__violations") == []
    assert not [line for line in console if "Content Security Policy" in line], console
    await page.close()


async def test_another_site_cannot_frame_the_dashboard(dev: Server, browser: Any) -> None:
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    await page.set_content(f'<iframe id="f" src="{dev.url}/runs"></iframe>')
    await page.wait_for_timeout(1500)
    frame = next(f for f in page.frames if f is not page.main_frame)
    assert not frame.url.startswith(dev.url) or await frame.locator("nav").count() == 0
    assert any("frame-ancestors" in line for line in console), console
    await page.close()
