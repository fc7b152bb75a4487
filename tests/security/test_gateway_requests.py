"""Issue 22, cases 3, 4, 5 and 7 (second half): the requests pgqueue makes on an app's behalf
(`step.ai.infer`, `step.fetch`; pgqueue/executor/gateway.py), against a real `pgqueue serve` with
its workers and an app of the official JS SDK (tests/compat/js_app/security.js), talking to
provider stubs on loopback.

3. An AI call's credential (the gemini format's `?key=`, a header of the others) reaches the
   provider and nothing else: not the run's stored errors or outputs, not the server log, even
   when the request fails with a message about its URL.
4. A redirect to another origin receives no credential and no custom header: AI calls do not
   follow redirects, a fetch follows without them (a redirect within the origin keeps them).
5. A compressed response is decoded only up to the 4 MB a step output may hold: four parallel
   fetches of a gzip bomb fail without the server's memory growing by what they inflate to.
7. `step.fetch` has its own egress allow-list: allowing apps on this host
   (`PGQUEUE_ALLOW_LOOPBACK=1`) does not let a function fetch pgqueue's own API or any other
   loopback service; `PGQUEUE_FETCH_ALLOWED_NETWORKS` does, for what it lists.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.compat import js_fixtures
from tests.compat.conftest import App, Server, sync_via_put
from tests.helpers.serve import rows
from tests.security.conftest import Answer, Stub, json_answer

pytestmark = pytest.mark.compat

MB = 1024 * 1024
# The provider stubs listen on loopback, which production refuses to fetch unless allowed.
FETCH_ENV = {"PGQUEUE_FETCH_ALLOWED_NETWORKS": "127.0.0.0/8"}
COMPLETION = {"id": "stub", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
              "candidates": [{"content": {"parts": [{"text": "hi"}]}}], "content": [{"text": "hi"}]}


def _stack(serve_factory: Callable[..., Server], env: dict[str, str]) -> Iterator[tuple[Server, App]]:
    server = serve_factory(env)
    app = js_fixtures.start_js_app(server, app_id="js-security", script="security.js")
    try:
        sync_via_put(app, server, expect_functions=2)
        yield server, app
    finally:
        app.proc.terminate()


@pytest.fixture
def stack(serve_factory: Callable[..., Server]) -> Iterator[tuple[Server, App]]:
    yield from _stack(serve_factory, FETCH_ENV)


@pytest.fixture
def stack_without_fetch_list(serve_factory: Callable[..., Server]) -> Iterator[tuple[Server, App]]:
    yield from _stack(serve_factory, {"PGQUEUE_FETCH_ALLOWED_NETWORKS": ""})  # empty: not set


def _run(server: Server, name: str, data: dict[str, Any], *, timeout: float = 60) -> dict[str, Any]:
    event_id = server.send(name, data)
    [run] = server.wait_runs(event_id, timeout=timeout)
    assert run["status"] == "Completed", run
    return run


def _stored(server: Server, run_id: str) -> str:
    """Everything pgqueue stored of a run (the run, its steps, its attempts), as one text."""
    found = [rows(server.database_url, query, (run_id,)) for query in (
        "SELECT output, error FROM pgqueue.runs WHERE id = %s",
        "SELECT step_id, name, memo FROM pgqueue.steps WHERE run_id = %s",
        "SELECT error FROM pgqueue.attempts WHERE run_id = %s")]
    return json.dumps(found, default=str)


def _vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


# -- 3: credentials ---------------------------------------------------------------------------------


def test_an_ai_calls_credential_reaches_the_provider_and_nothing_else(
    stack: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack
    key = "AIza" + uuid.uuid4().hex

    def provider(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith("/big/"):  # more than a step output may hold: OutputTooLarge
            return 200, {"Content-Type": "application/json"}, b'{"pad": "' + b"x" * (5 * MB) + b'"}'
        return json_answer(200, COMPLETION)

    stub = stub_factory(provider)
    outputs = {}
    for case, fmt, base_url in (("too-large", "gemini", f"{stub.url}/big/v1beta/"),
                                ("not-http", "gemini", "ftp://127.0.0.1:1/v1beta/"),
                                ("header-too-large", "anthropic", f"{stub.url}/big/v1/"),
                                ("answered", "gemini", f"{stub.url}/ok/v1beta/")):
        run = _run(server, "security/infer", {"format": fmt, "base_url": base_url, "api_key": key})
        outputs[case] = run["output"]
        assert key not in json.dumps(run) and key not in _stored(server, run["run_id"]), case
    assert outputs["answered"].get("answer") == COMPLETION, outputs
    for case in ("too-large", "not-http", "header-too-large"):
        assert outputs[case].get("error"), (case, outputs[case])  # the step failed, saying why
    assert "4 MB" in outputs["too-large"]["message"] and "[REDACTED]" in outputs["too-large"]["message"]
    assert "http(s)" in outputs["not-http"]["message"]
    # It did go where the format puts it, and nowhere in pgqueue's log.
    sent = stub.seen("/big/v1beta/") + stub.seen("/ok/v1beta/")
    assert sent and all(f"key={key}" in r["path"] for r in sent)
    assert [r["headers"].get("x-api-key") for r in stub.seen("/big/v1/")] == [key]
    assert key not in server.proc.log()


def test_a_fetched_urls_credentials_are_not_stored(
    stack: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack
    secret = "tok_" + uuid.uuid4().hex
    stub = stub_factory(lambda method, path, headers, body: (200, {"Content-Type": "text/plain"}, b"hello"))
    url = f"http://user:{secret}@127.0.0.1:{stub.url.rsplit(':', 1)[1]}/data?api_key={secret}&page=2"
    run = _run(server, "security/fetch", {"url": url})
    assert run["output"]["results"] == [{"status": 200, "body": "hello"}], run["output"]
    assert secret not in _stored(server, run["run_id"]) and secret not in server.proc.log()
    [sent] = stub.seen("/data")
    assert f"api_key={secret}" in sent["path"]  # the request itself was made as asked


# -- 4: redirects -----------------------------------------------------------------------------------


def test_credentials_do_not_follow_a_redirect_to_another_origin(
    stack: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack
    key = "sk-ant-" + uuid.uuid4().hex
    custom = "custom-" + uuid.uuid4().hex
    # Another origin (another port) that echoes what it was sent, as the attack's did.
    elsewhere = stub_factory(lambda method, path, headers, body: json_answer(200, {"headers": headers,
                                                                                    "path": path}))

    def provider(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith("/moved/"):
            return 307, {"Location": f"{elsewhere.url}/collect{path}"}, b""
        if path.startswith("/hop"):
            return 302, {"Location": "/echo"}, b""
        if path.startswith("/echo"):
            return json_answer(200, {"headers": headers})
        return json_answer(200, COMPLETION)

    stub = stub_factory(provider)
    ai = _run(server, "security/infer", {"format": "anthropic", "base_url": f"{stub.url}/moved/v1/",
                                         "api_key": key})
    assert ai["output"].get("error") and "redirect" in ai["output"]["message"], ai["output"]
    headers = {"Authorization": f"Bearer {key}", "X-Api-Key": key, "X-Custom": custom}
    fetched = _run(server, "security/fetch", {"url": f"{stub.url}/moved/data", "headers": headers})
    [result] = fetched["output"]["results"]
    assert result["status"] == 200, result  # followed, to the other origin
    assert key not in result["body"] and custom not in result["body"], result
    for sent in elsewhere.seen():
        assert key not in json.dumps(sent, default=str) and custom not in json.dumps(sent, default=str), sent
    assert len(elsewhere.seen()) == 1  # the fetch only: the AI call was not followed
    for run in (ai, fetched):
        assert key not in _stored(server, run["run_id"])
    # Within the origin a redirect keeps the caller's headers.
    same = _run(server, "security/fetch", {"url": f"{stub.url}/hop", "headers": {"X-Custom": custom}})
    [kept] = same["output"]["results"]
    assert kept["status"] == 200 and json.loads(kept["body"])["headers"]["x-custom"] == custom, kept


# -- 5: decompression --------------------------------------------------------------------------------

BOMB = gzip.compress(b"\0" * (256 * MB), compresslevel=9)  # about 250 KB


def test_a_decompression_bomb_is_refused_within_the_cap(
    stack: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack
    stub = stub_factory(lambda method, path, headers, body: (
        200, {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}, BOMB))
    pid = server.proc.popen.pid
    # Warm the fetch path once (a small answer), then measure: VmHWM is the process's peak RSS.
    _run(server, "security/fetch", {"url": f"{stub.url}/warm"})
    rss_before, hwm_before = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")
    run = _run(server, "security/fetch", {"url": [f"{stub.url}/bomb/{i}" for i in range(4)]})
    results = run["output"]["results"]
    assert len(results) == 4 and all(r.get("error") and "4 MB" in r["message"] for r in results), results
    assert len(stub.seen("/bomb/")) == 4
    peak = _vm(pid, "VmHWM")
    # Four fetches may hold up to their 4 MB each (and the transport's chunks) at once; inflating
    # whole chunks took ~47 MB each (a 64 KiB chunk of this bomb inflates to 64 MB).
    assert peak <= max(hwm_before, rss_before + 4 * 8 * MB + 24 * MB), (rss_before / MB, hwm_before / MB,
                                                                        peak / MB)


# -- 7: the fetch allow-list --------------------------------------------------------------------------


def test_allowing_apps_on_this_host_does_not_open_loopback_to_fetches(
    stack_without_fetch_list: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack_without_fetch_list  # PGQUEUE_ALLOW_LOOPBACK=1: the app runs on this host
    stub = stub_factory(lambda method, path, headers, body: (200, {}, b"local service"))
    port = stub.url.rsplit(":", 1)[1]
    targets = [f"{server.url}/v1/runs", f"{stub.url}/internal", f"http://localhost:{port}/x"]
    run = _run(server, "security/fetch", {"url": targets})  # the app itself is called: the run completes
    results = run["output"]["results"]
    assert len(results) == 3 and all(r.get("error") for r in results), results
    assert all("PGQUEUE_FETCH_ALLOWED_NETWORKS" in r["message"] for r in results), results
    assert stub.seen() == []


def test_the_fetch_allow_list_opens_what_it_lists(
    stack: tuple[Server, App], stub_factory: Callable[..., Stub]
) -> None:
    server, _ = stack  # PGQUEUE_FETCH_ALLOWED_NETWORKS=127.0.0.0/8
    stub = stub_factory(lambda method, path, headers, body: (200, {}, b"local service"))
    run = _run(server, "security/fetch", {"url": f"{stub.url}/internal"})
    assert run["output"]["results"] == [{"status": 200, "body": "local service"}]
    # Link-local and metadata addresses stay refused whatever the list says.
    refused = _run(server, "security/fetch", {"url": "http://169.254.169.254/latest/meta-data/"})
    [result] = refused["output"]["results"]
    assert result.get("error") and "169.254.169.254" in result["message"], result

