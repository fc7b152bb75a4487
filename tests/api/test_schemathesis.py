"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis): no generated
request — valid or not — may get a 5xx. The app runs in this process (uvicorn in a thread) in dev
mode against a real migrated database, without background services, so nothing calls out; the
number of examples per operation is bounded so the whole module stays well under a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from pgqueue.settings import Settings
from tests.helpers.procs import free_port

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def live_api(module_database_url: str) -> Iterator[tuple[Any, str]]:
    port = free_port()
    app = create_app(Settings(database_url=module_database_url, port=port).validated(), run_services=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="schemathesis-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    # something to find: an app with a function, an event and its run
    register = {"appName": "fuzz", "url": "http://127.0.0.1:9/api/inngest",
                "functions": [{"id": "fuzz-fn", "name": "fn", "triggers": [{"event": "fuzz/go"}]}]}
    assert httpx.post(f"{url}/fn/register", json=register, timeout=10).status_code == 200
    assert httpx.post(f"{url}/e/dev", json={"name": "fuzz/go", "data": {"n": 1}}, timeout=10).status_code == 200
    try:
        yield app, url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def api_schema(live_api: tuple[Any, str]) -> Any:
    app, _ = live_api
    return schemathesis.openapi.from_dict(app.openapi())


schema = schemathesis.pytest.from_fixture("api_schema")


# POST /v1/apps/sync makes the server call the URL it is given: fuzzing it would send requests to
# arbitrary hosts. Its input handling is covered in tests/api/test_sync.py.
@schema.exclude(path="/v1/apps/sync").parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
def test_no_generated_request_gets_a_server_error(case: Any, live_api: tuple[Any, str]) -> None:
    _, url = live_api
    response = case.call(base_url=url, timeout=15)
    case.validate_response(response, checks=[not_a_server_error])
