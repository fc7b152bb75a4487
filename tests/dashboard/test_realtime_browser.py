"""Realtime in a real browser (headless Chromium): a page of the app (tests/compat/js_app/realtime.js)
fetches a subscription token from the app's own server and subscribes with the official JS SDK's
`subscribe()` over a WebSocket to pgqueue, another origin; a function run publishes three messages
and the page gets them in order. The run's page on pgqueue's dashboard then lists them.
Screenshots go to test-artifacts/dashboard-realtime-*.png."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat import js_fixtures
from tests.compat.conftest import App, Server, start_server, sync_via_put
from tests.dashboard.conftest import shot_path

pytestmark = pytest.mark.compat


@pytest.fixture
def realtime_stack(database_url: str) -> Iterator[tuple[Server, App]]:
    js_fixtures.ensure_js_app_installed()
    server = start_server(database_url)
    app = None
    try:
        app = js_fixtures.start_js_app(server, app_id="js-realtime", script="realtime.js",
                                       env={"NODE_OPTIONS": "--experimental-websocket"})
        sync_via_put(app, server, expect_functions=2)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


async def test_a_page_subscribes_with_a_token_it_fetched_and_gets_a_run_s_messages(
    realtime_stack: tuple[Server, App], browser: Any
) -> None:
    server, app = realtime_stack
    key = uuid.uuid4().hex
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{app.base}/browser?channel=progress:{key}&topics=status")
    await page.wait_for_function("document.body.dataset.state !== 'starting'", timeout=30_000)
    assert await page.evaluate("document.body.dataset.state") == "subscribed", errors

    event_id = server.send("js/realtime.progress", {"id": key, "gap_ms": 200})

    await page.wait_for_function("window.received.length >= 3", timeout=30_000)
    received = await page.evaluate("window.received")
    assert [m["data"]["n"] for m in received] == [1, 2, 3]
    assert {m["topic"] for m in received} == {"status"}
    await page.screenshot(path=shot_path("realtime-page"))

    [run] = await asyncio.to_thread(server.wait_runs, event_id)
    await page.goto(f"{server.url}/runs/{run['run_id']}")
    rows = page.locator('#run-realtime tr[data-topic="status"]')
    assert await rows.count() == 3
    assert '"n": 1' in await rows.nth(0).inner_text() or '"n":1' in await rows.nth(0).inner_text()
    assert f"progress:{key}" in await page.inner_text("#run-realtime")
    await page.screenshot(path=shot_path("realtime-run"), full_page=True)
    await page.close()
    assert not errors
