"""Durable endpoints with the official JS SDK (`inngest` 4.24.0): routes of an app run as durable
functions inside their own HTTP request (`inngest.endpoint(handler)`, tests/compat/js_app/endpoint.js),
creating their run with `POST /v1/checkpoint` and storing steps with `POST /v1/checkpoint/{runId}/steps`,
in dev, production and PgBouncer modes. The app is never synced.

What is checked: a two-step endpoint answers in its request and leaves a Completed run with both
steps stored and the request as its event; a step that fails switches the run to pgqueue's queue
(the client is redirected to the run's output, which waits for the end), and pgqueue's retry calls
the endpoint, which completes the run without running the stored step again; malformed bodies get a
4xx JSON error that says what is wrong; production refuses the SDK routes without the signing key,
and the output route without the run's token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.compat import js_fixtures
from tests.compat.conftest import STACK_MODES, App, Server, server_for_mode
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat

ULID = "01J00000000000000000000000"


@pytest.fixture(scope="module", params=STACK_MODES)
def stack(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[tuple[Server, App]]:
    js_fixtures.ensure_js_app_installed()
    server = server_for_mode(request, module_database_url, request.param)
    app = None
    try:
        app = js_fixtures.start_js_app(server, app_id="js-endpoint", script="endpoint.js")
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def _run_for(server: Server, tag: str) -> dict[str, Any]:
    """The run whose endpoint URL carries `tag`, as the REST API shows it once it has ended."""
    with psycopg.connect(server.database_url, autocommit=True, row_factory=dict_row,
                         prepare_threshold=None) as conn:
        rows = conn.execute("SELECT id FROM pgqueue.runs WHERE endpoint_url LIKE %s",
                            (f"%tag={tag}%",)).fetchall()
    assert len(rows) == 1, rows

    def ended() -> dict[str, Any] | None:
        with server.client() as c:
            r = c.get(f"/v1/runs/{rows[0]['id']}")
        assert r.status_code == 200, r.text
        run = dict(r.json()["data"])
        return None if run["status"] in ("Queued", "Running") else run

    return wait_until(ended, timeout=30, message=f"the run of endpoint request {tag} ends")


def _jobs(server: Server, run_id: str) -> list[dict[str, Any]]:
    with server.client() as c:
        r = c.get(f"/v1/runs/{run_id}/jobs")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _count(app: App, tag: str, step: str) -> int:
    return len(app.ledger()["ledger"].get(f"{tag}:{step}", []))


def test_two_steps_answer_in_the_request(stack: tuple[Server, App]) -> None:
    server, app = stack
    tag = uuid.uuid4().hex
    r = httpx.get(f"{app.base}/api/hello", params={"name": "pg", "tag": tag}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "hello pg", "n": 8}
    run = _run_for(server, tag)
    assert run["status"] == "Completed", run
    # The run's output is the endpoint's response, as Inngest stores it.
    assert run["output"]["status"] == 200
    assert json.loads(run["output"]["body"]) == {"greeting": "hello pg", "n": 8}
    jobs = _jobs(server, run["run_id"])
    assert [(j["name"], j["output"]) for j in jobs] == [("greet", "hello pg"), ("count", 8)]
    assert (_count(app, tag, "greet"), _count(app, tag, "count")) == (1, 1)
    with server.client() as c:
        event = c.get(f"/v1/events/{run['event_id']}").json()["data"]
    assert event["name"] == "inngest/http.request"
    assert event["data"]["method"] == "GET" and event["data"]["path"] == "/api/hello"


def test_a_failing_step_goes_on_in_the_queue(stack: tuple[Server, App]) -> None:
    server, app = stack
    tag = uuid.uuid4().hex
    r = httpx.post(f"{app.base}/api/flaky", params={"tag": tag}, timeout=30)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(f"{server.url}/v1/http/runs/") and "token=" in location
    out = httpx.get(location, timeout=90)
    assert out.status_code == 200, out.text
    assert out.json() == {"a": "A", "b": "B after 2"}
    run = _run_for(server, tag)
    assert run["status"] == "Completed", run
    assert (_count(app, tag, "a"), _count(app, tag, "b")) == (1, 2)
    assert [j["name"] for j in _jobs(server, run["run_id"]) if j.get("output") is not None] == ["a", "b"]


def test_the_output_needs_the_run_token(stack: tuple[Server, App]) -> None:
    server, app = stack
    tag = uuid.uuid4().hex
    r = httpx.get(f"{app.base}/api/hello", params={"tag": tag}, timeout=30)
    assert r.status_code == 200
    run_id = _run_for(server, tag)["run_id"]
    for query in ("", "?token=nope"):
        bad = httpx.get(f"{server.url}/v1/http/runs/{run_id}/output{query}", timeout=10)
        assert bad.status_code == 401, bad.text
        assert "token" in bad.json()["error"]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v1/checkpoint", b"{", 400, "not valid JSON"),
    ("/v1/checkpoint", b'{"run_id": "nope", "event": {"data": {}}}', 400, "run_id is not a ULID"),
    ("/v1/checkpoint", json.dumps({"run_id": ULID, "event": {"data": {"domain": "ftp://x", "method": "GET",
                                                                      "path": "/"}}}).encode(),
     400, "must be the endpoint's origin"),
    ("/v1/checkpoint", json.dumps({"run_id": ULID, "event": {"data": {"domain": "http://x", "method": "GET",
                                                                      "path": "/"}}, "retries": 99}).encode(),
     400, "retries must be an integer from 0 to 20"),
    (f"/v1/checkpoint/{ULID}/steps", b'{"steps": {}}', 400, "steps must be a list"),
    (f"/v1/checkpoint/{ULID}/steps", b'{"steps": [{"op": "StepRun"}]}', 400, "steps[0] is not a step opcode"),
    (f"/v1/checkpoint/{ULID}/steps", b'{"steps": []}', 404, f"run {ULID} not found"),
])
def test_bad_input_is_a_json_error(stack: tuple[Server, App], path: str, body: bytes, status: int,
                                   message: str) -> None:
    server, _ = stack
    with server.client() as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()


def test_production_needs_the_signing_key(stack: tuple[Server, App]) -> None:
    """Production: 401 without the key, before the body is read; dev mode is open (the empty
    body is then what is refused)."""
    server, _ = stack
    for path in ("/v1/checkpoint", f"/v1/checkpoint/{ULID}/steps"):
        r = httpx.post(f"{server.url}{path}", json={}, timeout=10)
        if server.mode == "serve":
            assert r.status_code == 401, r.text
            assert "signing key" in r.json()["error"]
        else:
            assert r.status_code == 400, r.text


def test_a_run_that_exists_is_refused(stack: tuple[Server, App]) -> None:
    server, app = stack
    tag = uuid.uuid4().hex
    assert httpx.get(f"{app.base}/api/hello", params={"tag": tag}, timeout=30).status_code == 200
    run_id = _run_for(server, tag)["run_id"]
    body = {"run_id": run_id, "event": {"name": "inngest/http.request",
                                        "data": {"domain": app.base, "method": "GET", "path": "/api/hello"}}}
    with server.client() as c:
        r = c.post("/v1/checkpoint", json=body)
    assert r.status_code == 409, r.text
    assert "exists already" in r.json()["error"]
