"""The dashboard as an operator's daily tool (issue 25), in a real Chromium against a real `pgqueue dev`
and an app written with the official Python SDK: a run's trace waterfall whose bars are as wide as
the stored durations, rerun from a step from the run page, the links between a failed run and its
onFailure run, search, charts, bulk actions with their preview counts, invoke from a function's page.
No page logs a console error or a CSP violation. Screenshots go to test-artifacts/dashboard-*.png
(the ones in docs/ come from here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat.conftest import App, Server, start_server, synced_py_app
from tests.dashboard.conftest import shot_path
from tests.dashboard.test_csp import VIOLATIONS
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

VIEWPORT = {"width": 1360, "height": 900}


@pytest.fixture(scope="module")
def stack(module_database_url: str) -> Iterator[tuple[Server, App]]:
    with synced_py_app(start_server(module_database_url)) as running:
        yield running


def _ended(server: Server, event_id: str, timeout: float = 60) -> dict[str, Any]:
    [run] = server.wait_runs(event_id, timeout=timeout)
    return dict(run)


class Page:
    """A page that records console errors and CSP violations; `clean()` says there were none."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    async def goto(self, url: str) -> None:
        resp = await self.page.goto(url)
        assert resp is not None and resp.status == 200, url
        await self.clean()

    async def clean(self) -> None:
        assert await self.page.evaluate("window.__violations") == []
        assert self.errors == []


async def _open(browser: Any) -> Page:
    page = await browser.new_page(viewport=VIEWPORT)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.add_init_script(VIOLATIONS)
    return Page(page)


def _spans(span: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield span
    for child in span["children"]:
        yield from _spans(child)


async def test_the_waterfall_draws_each_span_as_wide_as_its_stored_duration(
    stack: tuple[Server, App], browser: Any
) -> None:
    server, app = stack
    run = await asyncio.to_thread(_ended, server, server.send("compat/waterfall", {"user": "u-7", "seconds": 2}))
    assert run["status"] == "Completed", run
    root = server.get(f"/v1/runs/{run['run_id']}/trace")["data"]["root"]
    spans = {s["span_id"]: s for s in _spans(root)}
    [sleep] = [s for s in spans.values() if s["kind"] == "sleep"]
    assert sleep["duration_ms"] >= 1900  # from the call that asked for it to its wake-up
    [charge] = [s for s in spans.values() if s["name"] == "charge" and s["kind"] == "step"]
    assert [a["status"] for a in charge["children"]] == ["FAILED", "COMPLETED"]  # the retry is its own bar

    p = await _open(browser)
    await p.goto(f"{server.url}/runs/{run['run_id']}")
    total_ms = float(await p.page.get_attribute("#waterfall", "data-total-ms"))
    measured = await p.page.evaluate("""() => Array.from(document.querySelectorAll('#waterfall .wf-item')).map(d => {
        const track = d.querySelector('.wf-track').getBoundingClientRect();
        const bar = d.querySelector('.wf-bar');
        return {id: d.id.slice(5), kind: d.dataset.spanKind, name: d.dataset.spanName,
                width: bar ? bar.getBoundingClientRect().width / track.width : null};
    })""")
    assert len(measured) == len(spans)
    compared = 0
    for m in measured:
        span = spans[m["id"]]
        if span["duration_ms"] is None or span["duration_ms"] < total_ms * 0.03:
            continue  # a few milliseconds: a mark of the minimum width
        expected = span["duration_ms"] / total_ms
        assert m["width"] == pytest.approx(expected, rel=0.05), (m, span["duration_ms"], total_ms)
        compared += 1
    assert compared >= 2  # the run and the sleep at least
    assert {"sleep", "step", "attempt", "queue", "run"} <= {m["kind"] for m in measured}

    # a step's output and a failed attempt's error, on opening their rows
    await p.page.click(f'details[id="span-{charge["span_id"]}"] > summary')
    out = p.page.locator(f'details[id="span-{charge["span_id"]}"] .wf-output pre')
    await out.first.wait_for()
    assert (await out.first.inner_text()).strip() == "42"
    failed = charge["children"][0]
    await p.page.click(f'details[id="span-{failed["span_id"]}"] > summary')
    err = p.page.locator(f'details[id="span-{failed["span_id"]}"] .wf-output pre.error')
    await err.wait_for()
    assert "payment service timed out" in await err.inner_text()
    await p.page.screenshot(path=shot_path("trace"), full_page=True)
    await p.clean()

    # rerun from the second step from the run page: a new run in which "load" did not execute again
    await p.page.select_option("#rerun-form select", label="charge")
    await p.page.click("#rerun-run")
    await p.page.wait_for_selector(".flash.ok")
    new_id = p.page.url.rsplit("/", 1)[1]
    assert new_id != run["run_id"]
    assert "2 earlier step outputs kept" in await p.page.inner_text(".flash.ok")  # load, and the nap
    assert run["run_id"] in await p.page.inner_text('#run-links [data-link="replay_of"]')
    rerun = await asyncio.to_thread(wait_until, lambda: _done(server, new_id), timeout=30, message="the rerun")
    assert rerun["output"] == run["output"]
    assert [app.count(new_id, s) for s in ("load", "charge", "notify")] == [0, 2, 1]
    await p.page.close()


def _done(server: Server, run_id: str) -> dict[str, Any] | None:
    run = server.get(f"/v1/runs/{run_id}")["data"]
    return run if run["status"] == "Completed" else None


def _runs_of(server: Server, slug: str, status: str | None = None) -> list[dict[str, Any]]:
    query = f"/v1/runs?function_id={slug}&limit=200" + (f"&status={status}" if status else "")
    return list(server.get(query)["data"])


async def test_charts_search_links_invoke_and_bulk_actions(stack: tuple[Server, App], browser: Any) -> None:
    server, _ = stack
    burst = [server.send("compat/three", {"echo": f"burst-{i % 4}"}) for i in range(20)]
    await asyncio.to_thread(lambda: [server.wait_runs(e) for e in burst])
    failed = await asyncio.to_thread(_ended, server, server.send("compat/fail"))
    parent = await asyncio.to_thread(_ended, server, server.send("compat/invoke", {"n": 4}))
    sleepers = [server.send("compat/cancellable", {"id": f"s{i}", "sleep": 60}) for i in range(3)]
    await asyncio.to_thread(wait_until, lambda: len(_runs_of(server, "py-compat-cancellable", "Running")) == 3,
                            timeout=30, message="three sleeping runs")
    p = await _open(browser)

    # charts on the overview, with the burst's real counts
    await p.goto(server.url + "/")
    started = int(await p.page.inner_text('#chart-totals [data-total="started"]'))
    completed = int(await p.page.inner_text('#chart-totals [data-total="completed"]'))
    assert started >= 20 + 1 + 2 + 3 and completed >= 20
    assert await p.page.locator("#chart-runs rect.bar.completed").count() >= 1
    assert await p.page.locator("#chart-durations polyline.p99").count() == 1
    await p.page.screenshot(path=shot_path("overview-charts"), full_page=True)

    # search runs by their event's data: exactly the five runs of one echo
    await p.goto(server.url + "/runs")
    await p.page.fill("#run-search", 'event.data.echo == "burst-2"')
    await p.page.click("text=Apply")
    await p.page.wait_for_selector("#search-meta")
    await p.clean()
    shown = await p.page.locator("tr[data-run-id]").count()
    expected = server.get("/v1/search/runs?q=" + 'event.data.echo%20==%20"burst-2"')["data"]
    assert shown == len(expected) == 5
    await p.page.screenshot(path=shot_path("search"), full_page=True)
    await p.goto(server.url + "/events?q=" + 'event.data.echo%20%3D%3D%20%22burst-3%22')
    assert await p.page.locator("#search-meta").count() == 1
    assert "5 matches" in await p.page.inner_text("#search-meta")

    # a failed run links to its onFailure run, and back
    await p.goto(f"{server.url}/runs/{failed['run_id']}")
    link = p.page.locator('#run-links [data-link="failure_handler"] a')
    await link.wait_for()
    await link.click()
    await p.page.wait_for_selector('#run-links [data-link="trigger_run"]')
    assert failed["run_id"] in await p.page.inner_text('#run-links [data-link="trigger_run"]')
    await p.clean()

    # an invoked child links to its parent, and the parent to it
    await p.goto(f"{server.url}/runs/{parent['run_id']}")
    child_link = p.page.locator('#run-links [data-link="invoked"] a')
    child_id = (await child_link.inner_text()).strip()
    await child_link.click()
    await p.page.wait_for_url(f"**/runs/{child_id}")
    assert parent["run_id"] in await p.page.inner_text('#run-links [data-link="parent"]')

    # invoke a function with a payload from its page
    await p.goto(server.url + "/functions/py-compat-three-steps")
    await p.page.fill("#invoke-data", '{"echo": "invoked from the page"}')
    await p.page.click("#invoke-button")
    await p.page.wait_for_selector(".flash.ok")
    invoked_id = p.page.url.rsplit("/", 1)[1]
    done = await asyncio.to_thread(wait_until, lambda: _done(server, invoked_id), timeout=30, message="invoke")
    assert done["output"]["echo"] == "invoked from the page"
    await p.page.screenshot(path=shot_path("function"), full_page=True)

    # bulk cancel with a preview count, then the cancellation history
    await p.goto(server.url + "/bulk")
    form = p.page.locator("#bulk-cancel form")
    await form.locator('select[name="function"]').select_option("py-compat-cancellable")
    await form.locator('input[name="if"]').fill('event.data.id != "s1"')
    await p.page.click("#preview-cancel")
    await p.page.wait_for_selector("#preview-cancel-result")
    await p.clean()
    assert await p.page.get_attribute("#preview-cancel-result [data-matching]", "data-matching") == "2"
    assert len(_runs_of(server, "py-compat-cancellable", "Running")) == 3  # a preview changes nothing
    await p.page.screenshot(path=shot_path("bulk"), full_page=True)
    await p.page.click("#run-cancel")
    await p.page.wait_for_selector(".flash.ok")
    assert "2 run(s) of py-compat-cancellable cancelled" in await p.page.inner_text(".flash.ok")
    row = p.page.locator("#cancellation-history tr[data-cancellation]").first
    assert "2" in await row.locator("td.num").inner_text()
    assert [r["event_id"] for r in _runs_of(server, "py-compat-cancellable", "Running")] == [sleepers[1]]
    # replay preview counts the failed runs of a function
    form = p.page.locator("#bulk-replay form")
    await form.locator('select[name="function"]').select_option("py-compat-always-fails")
    await p.page.click("#preview-replay")
    await p.page.wait_for_selector("#preview-replay-result")
    assert await p.page.get_attribute("#preview-replay-result [data-matching]", "data-matching") == "1"
    await p.clean()
    await p.page.close()
