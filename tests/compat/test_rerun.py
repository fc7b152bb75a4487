"""Rerun from a step (`POST /v1/runs/{id}/rerun {"from_step": ...}`) with the official Python and JS
SDKs: the new run gets the outputs the original stored before the chosen step as its own memoised
steps, and the SDK skips them — their bodies do not execute again (the apps' ledgers say so) — and
runs the chosen step and the rest.

Both apps are synced to one server (tests/compat/apps/py_app.py, tests/compat/js_app/server.js);
`compat/three` starts a run of each app's `three-steps` (steps a, b, c)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, App, Server, start_py_app, start_server, sync_via_put
from tests.compat.js_fixtures import JS_FUNCTION_COUNT, start_js_app
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def stack(module_database_url: str) -> Iterator[tuple[Server, dict[str, App]]]:
    server = start_server(module_database_url, mode="dev")
    started: dict[str, App] = {}
    try:
        started["py"] = start_py_app(server)
        sync_via_put(started["py"], server, expect_functions=PY_APP_FUNCTIONS)
        started["js"] = start_js_app(server)
        sync_via_put(started["js"], server, expect_functions=JS_FUNCTION_COUNT)
        yield server, started
    finally:
        for app in started.values():
            app.proc.terminate()
        server.proc.terminate()


def _completed(server: Server, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = server.get(f"/v1/runs/{run_id}")["data"]
        return run if run["status"] not in ("Queued", "Running") else None

    return dict(wait_until(done, timeout=60, message=f"run {run_id} to end"))


def _run_of(server: Server, event_id: str, slug: str) -> dict[str, Any]:
    runs = server.wait_runs(event_id, count=2, timeout=60)
    [run] = [r for r in runs if r["function_slug"] == slug]
    return run


def _rerun(server: Server, run_id: str, body: dict[str, Any]) -> httpx.Response:
    with server.client() as c:
        return c.post(f"/v1/runs/{run_id}/rerun", json=body)


@pytest.mark.parametrize("sdk", ["py", "js"])
def test_rerun_from_the_second_step_skips_the_first(stack: tuple[Server, dict[str, App]], sdk: str) -> None:
    server, apps = stack
    app = apps[sdk]
    original = _run_of(server, server.send("compat/three", {"echo": f"rerun-{sdk}"}), f"{app.app_id}-three-steps")
    assert original["status"] == "Completed", original
    assert [app.count(original["run_id"], s) for s in "abc"] == [1, 1, 1]

    resp = _rerun(server, original["run_id"], {"from_step": "b"})

    assert resp.status_code == 201, resp.text
    body = resp.json()["data"]
    assert body["rerun"] == {"original_run_id": original["run_id"], "from_step": "b",
                             "from_step_id": body["rerun"]["from_step_id"], "kept_steps": 1}
    new = _completed(server, body["run_id"])
    assert new["status"] == "Completed", new
    assert new["output"] == {"a": 1, "b": 2, "c": "three", "echo": f"rerun-{sdk}"}
    # the first step's body did not execute in the new run; the second and third did, once each
    assert [app.count(new["run_id"], s) for s in "abc"] == [0, 1, 1]
    jobs = server.get(f"/v1/runs/{new['run_id']}/jobs")["data"]
    assert [j["name"] for j in jobs] == ["a", "b", "c"]
    assert [j["output"] for j in jobs] == [1, 2, "three"]
    # linked to the original, and its trace shows the kept step with no call of its own
    meta = server.get(f"/v1/runs/{new['run_id']}")["data"]["metadata"]
    assert [m["values"]["original_run_id"] for m in meta if m["kind"] == "inngest.rerun"] == [original["run_id"]]
    spans = server.get(f"/v1/runs/{new['run_id']}/trace")["data"]["root"]["children"]
    kept = [s for s in spans if s["name"] == "a"]
    assert len(kept) == 1 and kept[0]["children"] == []


def test_rerun_from_the_last_step_and_from_the_start(stack: tuple[Server, dict[str, App]]) -> None:
    server, apps = stack
    app = apps["js"]
    original = _run_of(server, server.send("compat/three", {"echo": "last"}), "js-compat-three-steps")

    from_c = _rerun(server, original["run_id"], {"from_step": "c"}).json()["data"]
    whole = _rerun(server, original["run_id"], {}).json()["data"]

    assert from_c["rerun"]["kept_steps"] == 2 and whole["rerun"]["kept_steps"] == 0
    for run_id, expected in ((from_c["run_id"], [0, 0, 1]), (whole["run_id"], [1, 1, 1])):
        assert _completed(server, run_id)["status"] == "Completed"
        assert [app.count(run_id, s) for s in "abc"] == expected


def test_bad_reruns_are_refused_with_a_json_message(stack: tuple[Server, dict[str, App]]) -> None:
    server, _ = stack
    original = _run_of(server, server.send("compat/three", {}), "py-compat-three-steps")
    sleeping = [r for r in server.wait_runs(server.send("compat/sleep", {"seconds": 30}), count=2,
                                            terminal=False)]

    cases = [
        (original["run_id"], {"from_step": "nope"}, 400, "stored no step"),
        (original["run_id"], {"from_step": 3}, 400, "must be a string"),
        (original["run_id"], {"step": "b"}, 400, "from_step"),
        ("01ZZZZZZZZZZZZZZZZZZZZZZZZ", {"from_step": "b"}, 404, "not found"),
        (sleeping[0]["run_id"], {"from_step": "before"}, 409, "still"),
    ]
    for run_id, body, status, words in cases:
        resp = _rerun(server, run_id, body)
        assert resp.status_code == status, (body, resp.text)
        assert words in resp.json()["error"], resp.text
