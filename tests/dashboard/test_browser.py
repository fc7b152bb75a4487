"""The dashboard in a real browser, against a real `pgqueue dev` (and `pgqueue serve`) process and an
app written with the official Python SDK: find a completed run and open its timeline, cancel a
sleeping run and see it cancelled, watch a new run appear without reloading, send a test event.
Screenshots go to test-artifacts/dashboard-*.png."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pgqueue.protocol.signing import hashed_key, normalize_key
from tests.compat.conftest import EVENT_KEY, SIGNING_KEY, App, Server, start_server, synced_py_app
from tests.dashboard.conftest import shot_path
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

VIEWPORT = {"width": 1360, "height": 900}


@pytest.fixture
def dev_stack(database_url: str) -> Iterator[tuple[Server, App]]:
    with synced_py_app(start_server(database_url)) as running:
        yield running


def _run_of(server: Server, event_id: str, *, status: str | None = None, timeout: float = 30) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        runs = server.runs_for(event_id)
        if runs and (status is None or runs[0]["status"] == status):
            return runs[0]
        return None

    return dict(wait_until(found, timeout=timeout, message=f"a {status or ''} run for event {event_id}"))


def _sleeping(server: Server, run_id: str) -> bool:
    timeline = server.get(f"/v1/runs/{run_id}/timeline")["data"]
    return any(t["entry"] == "step" and t["step_name"] == "first" for t in timeline)


async def test_find_a_completed_run_open_its_timeline_and_cancel_a_sleeping_run(
    dev_stack: tuple[Server, App], browser: Any
) -> None:
    server, _ = dev_stack
    done_event = server.send("compat/three", {"echo": "from the browser test"})
    completed = await asyncio.to_thread(_run_of, server, done_event, status="Completed")
    sleep_event = server.send("compat/cancellable", {"id": "x", "sleep": 30})
    sleeping = await asyncio.to_thread(_run_of, server, sleep_event, status="Running")
    await asyncio.to_thread(wait_until, lambda: _sleeping(server, sleeping["run_id"]), timeout=30,
                            message="the cancellable run to sleep")

    page = await browser.new_page(viewport=VIEWPORT)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(server.url + "/")
    assert await page.title() == "Overview · pgqueue"
    assert "pgqueue dev" in await page.inner_text(".banner")
    await page.screenshot(path=shot_path("overview"), full_page=True)

    # Runs list → the completed run → its timeline
    await page.click("nav >> text=Runs")
    row = page.locator(f'tr[data-run-id="{completed["run_id"]}"]')
    await row.wait_for()
    assert "Completed" in await row.inner_text()
    await page.screenshot(path=shot_path("runs"), full_page=True)
    await row.locator("a.id").click()
    await page.wait_for_url(f"**/runs/{completed['run_id']}")
    for step in ("a", "b", "c"):
        assert await page.locator(f'#timeline li[data-step="{step}"]').count() == 1
    assert '"three"' in await page.inner_text("#timeline")
    assert "from the browser test" in await page.inner_text("#run-output")
    assert await page.locator("#replay-run").count() == 1
    await page.screenshot(path=shot_path("run-completed"), full_page=True)

    # the sleeping run: its pending sleep shows, then Cancel
    await page.goto(f"{server.url}/runs?status=running")
    await page.locator(f'tr[data-run-id="{sleeping["run_id"]}"] a.id').click()
    await page.wait_for_url(f"**/runs/{sleeping['run_id']}")
    assert "sleeping until" in await page.inner_text("#timeline")
    await page.screenshot(path=shot_path("run-sleeping"), full_page=True)
    await page.click("#cancel-run")
    await page.wait_for_selector(".flash.ok")
    assert "cancelled" in (await page.inner_text(".flash.ok")).lower()
    assert (await page.inner_text("#run-status")).strip() == "Cancelled"
    assert "cancelled from the dashboard" in await page.inner_text("#run-error")
    await page.screenshot(path=shot_path("run-cancelled"), full_page=True)
    assert server.get(f"/v1/runs/{sleeping['run_id']}")["data"]["status"] == "Cancelled"

    # live refresh: a run started elsewhere appears on the open runs page without a reload
    await page.goto(server.url + "/runs")
    new_event = server.send("compat/three", {"echo": "live"})
    new_run = await asyncio.to_thread(_run_of, server, new_event)
    await page.wait_for_selector(f'tr[data-run-id="{new_run["run_id"]}"]', timeout=15_000)

    # send a test event from the Events page; the run it starts shows up in the list
    await page.click("nav >> text=Events")
    await page.click("#send-event summary")
    await page.fill('input[name="name"]', "compat/three")
    await page.fill('textarea[name="data"]', json.dumps({"echo": "sent from the dashboard"}))
    await page.click("text=Send event")
    await page.wait_for_selector(".flash.ok")
    sent = re.search(r"event (\w{26})", await page.inner_text(".flash.ok"))
    assert sent is not None
    sent_run = await asyncio.to_thread(_run_of, server, sent.group(1), status="Completed")
    assert sent_run["output"]["echo"] == "sent from the dashboard"
    await page.screenshot(path=shot_path("events"), full_page=True)

    await page.click("nav >> text=Apps")
    assert await page.locator("text=py-compat-cancellable").count() >= 1
    await page.screenshot(path=shot_path("apps"), full_page=True)
    await page.close()


ADMIN_PASSWORD = "browser-test-admin-password"


async def test_serve_mode_login_and_no_secret_in_pages_or_the_server_log(database_url: str, browser: Any) -> None:
    server = start_server(database_url, mode="serve",
                          env={"PGQUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD, "PGQUEUE_LOG_FORMAT": "json"})
    try:
        page = await browser.new_page(viewport=VIEWPORT)
        await page.goto(server.url + "/runs")
        await page.wait_for_url("**/login?next=%2Fruns")
        assert "pgqueue serve" in await page.inner_text(".banner")
        await page.fill('input[name="secret"]', "wrong password")
        await page.click("button[type=submit]")
        assert "not accepted" in await page.inner_text(".error-text")
        await page.fill('input[name="secret"]', ADMIN_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/runs")
        html = [await page.content()]
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["pgqueue_session"]["httpOnly"] and cookies["pgqueue_session"]["sameSite"] == "Strict"
        for path in ("/", "/apps", "/events"):
            await page.goto(server.url + path)
            html.append(await page.content())
        await page.screenshot(path=shot_path("serve-events"), full_page=True)
        await page.close()
        # the REST API still wants its bearer token
        assert httpx.get(server.url + "/v1/runs", timeout=10).status_code == 401
    finally:
        server.proc.terminate()
    log = server.proc.log_path.read_text()
    secrets = (SIGNING_KEY, normalize_key(SIGNING_KEY), hashed_key(SIGNING_KEY), EVENT_KEY, ADMIN_PASSWORD)
    for text in (*html, log):
        for secret in secrets:
            assert secret not in text
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r["message"] == "dashboard login refused from 127.0.0.1" for r in records)
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
