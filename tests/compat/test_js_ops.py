"""Operations pgqueue performs, or refuses, for the official JS SDK, against the functions of the
"operations" block of tests/compat/js_app/server.js, in dev, production and PgBouncer modes:

- step.waitForSignal, resumed by POST /v1/signals (Inngest's shape), by the SDK's own
  step.sendSignal and by SQL `pgqueue.send_signal`; a second waiter is refused (onConflict "fail")
  or takes the signal over ("replace"); a timeout resumes with null.
- step.fetch (Gateway op): pgqueue makes the request to a real HTTP server on loopback.
- step.ai.infer (AIGateway op): the same against an OpenAI-compatible stub.
- group.parallel({mode: "race"}): the run goes on with the first step to finish.
- defer() (DeferAdd op): refused, naming the op.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.compat import js_fixtures, upstream_stub
from tests.compat.conftest import App, Server
from tests.compat.upstream_stub import Upstream
from tests.helpers.procs import wait_until
from tests.helpers.serve import rows

pytestmark = pytest.mark.compat
# The fixtures this module uses, by name.
js_stack = js_fixtures.js_stack
upstream = upstream_stub.upstream


def _token() -> str:
    return uuid.uuid4().hex[:12]


def _signal_pauses(server: Server, signal: str) -> list[dict[str, Any]]:
    return rows(server.database_url,
                "SELECT run_id, step_name, expires_at FROM pgqueue.pauses WHERE signal = %s", (signal,))


def _start_waiter(server: Server, app: App, signal: str, **data: Any) -> str:
    """A signal-waiter run parked on `signal` (its pause holds the name): the run id."""
    event_id = server.send("compat/signal-wait", {"signal": signal, **data})
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: any(p["run_id"] == run["run_id"] for p in _signal_pauses(server, signal)),
               timeout=20, message=f"run {run['run_id']} waiting for signal {signal}")
    return str(run["run_id"])


def _run(server: Server, run_id: str, *, timeout: float = 30) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run = server.get(f"/v1/runs/{run_id}")["data"]
        return None if run["status"] in ("Queued", "Running") else run

    return wait_until(ended, timeout=timeout, message=f"run {run_id} to end")


def _post_signal(server: Server, body: Any) -> httpx.Response:
    with server.client() as c:
        return c.post("/v1/signals", json=body)


# --- waitForSignal and signals -----------------------------------------------------------------


def test_rest_signal_resumes_the_waiting_run_with_the_sdk_shape(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"order-{_token()}-approved"
    run_id = _start_waiter(server, app, signal)
    r = _post_signal(server, {"signal": signal, "data": {"by": "ann", "n": [1, 2]}})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"run_id": run_id}
    run = _run(server, run_id)
    assert run["status"] == "Completed", run
    # What the SDK's waitForSignal returned to user code.
    assert run["output"] == {"got": {"signal": signal, "data": {"by": "ann", "n": [1, 2]}}}
    assert app.count(run_id, "before") == 1
    assert _signal_pauses(server, signal) == []
    # The signal was consumed: a second one finds nobody waiting.
    again = _post_signal(server, {"signal": signal, "data": {}})
    assert again.status_code == 404
    assert again.json() == {"error": "No signal found", "status": 404}


def test_signal_nobody_waits_for_is_404_and_bad_bodies_are_400(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    r = _post_signal(server, {"signal": f"nobody-{_token()}", "data": {"x": 1}})
    assert r.status_code == 404 and r.json()["error"] == "No signal found"
    bad = (({"data": {}}, "`signal` is required"), ({"signal": ""}, "`signal` is required"),
           ({"signal": "x" * 513}, "longer than 512"), (["not", "an", "object"], "JSON object"))
    for body, fragment in bad:
        r = _post_signal(server, body)
        assert r.status_code == 400, (body, r.text)
        assert fragment in r.json()["error"], r.json()


def test_rest_signals_need_credentials_in_production(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    body = {"signal": f"nobody-{_token()}", "data": {}}
    anonymous = httpx.post(f"{server.url}/v1/signals", json=body, timeout=10)
    # Production: the signing key (or its hash, or an API token) is required; dev is open on loopback.
    assert anonymous.status_code == (401 if server.mode == "serve" else 404), anonymous.text
    assert _post_signal(server, body).status_code == 404


def test_the_sdks_send_signal_resumes_another_run(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"js-sent-{_token()}"
    waiter = _start_waiter(server, app, signal)
    sender_event = server.send("compat/signal-send", {"signal": signal, "data": {"from": "sender"}})
    [sender] = server.wait_runs(sender_event, timeout=30)
    assert sender["status"] == "Completed", sender
    assert sender["output"] == {"run_id": waiter}  # the SDK parsed our answer's run_id
    run = _run(server, waiter)
    assert run["output"] == {"got": {"signal": signal, "data": {"from": "sender"}}}
    # Nobody waiting: the SDK's sendSignal reports no run (our 404), and its step still succeeds.
    lonely = server.send("compat/signal-send", {"signal": f"lonely-{_token()}", "data": None})
    [lonely_run] = server.wait_runs(lonely, timeout=30)
    assert lonely_run["status"] == "Completed" and lonely_run["output"] == {"run_id": None}, lonely_run


SEND_SIGNAL = "SELECT pgqueue.send_signal(%s, %s::jsonb)"


def test_sql_send_signal_resumes_only_when_its_transaction_commits(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"sql-{_token()}"
    run_id = _start_waiter(server, app, signal)
    with psycopg.connect(server.database_url, autocommit=True) as conn, conn.transaction(force_rollback=True):
        [row] = conn.execute(SEND_SIGNAL, (signal, '{"via": "sql"}')).fetchall()
        assert row[0] == run_id
    time.sleep(1.0)
    assert server.get(f"/v1/runs/{run_id}")["data"]["status"] == "Running"  # rolled back: still waiting
    assert len(_signal_pauses(server, signal)) == 1
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        [row] = conn.execute(SEND_SIGNAL, (signal, '{"via": "sql"}')).fetchall()
        assert row[0] == run_id
        [none] = conn.execute("SELECT pgqueue.send_signal(%s)", (signal,)).fetchall()
        assert none[0] is None  # consumed
    run = _run(server, run_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"got": {"signal": signal, "data": {"via": "sql"}}}


def test_a_second_waiter_on_the_same_signal_fails_the_way_inngest_does(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"contended-{_token()}"
    first = _start_waiter(server, app, signal)
    second_event = server.send("compat/signal-wait", {"signal": signal})  # onConflict "fail" (the default)
    [second] = server.wait_runs(second_event, timeout=30)
    assert second["status"] == "Failed", second
    assert second["error"]["name"] == "Error"
    assert second["error"]["message"] == "Signal conflict; signal wait already exists for another run"
    # The first waiter still holds the signal and gets it.
    assert [p["run_id"] for p in _signal_pauses(server, signal)] == [first]
    assert _post_signal(server, {"signal": signal, "data": "mine"}).json()["data"] == {"run_id": first}
    assert _run(server, first)["output"] == {"got": {"signal": signal, "data": "mine"}}


def test_replace_takes_the_signal_over_and_the_replaced_wait_times_out(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"replaced-{_token()}"
    first = _start_waiter(server, app, signal, timeout=4)
    second = _start_waiter(server, app, signal, conflict="replace")
    assert [p["run_id"] for p in _signal_pauses(server, signal)] == [second]
    if server.mode != "serve":  # the dev server's dashboard needs no login
        with server.client() as c:
            assert f"waiting for signal <code>{signal}</code>" in c.get(f"/runs/{second}").text
            assert "replaced by a later wait for its signal" in c.get(f"/runs/{first}").text
    r = _post_signal(server, {"signal": signal, "data": {"to": "second"}})
    assert r.json()["data"] == {"run_id": second}
    assert _run(server, second)["output"] == {"got": {"signal": signal, "data": {"to": "second"}}}
    replaced = _run(server, first, timeout=30)
    assert replaced["status"] == "Completed", replaced
    assert replaced["output"] == {"got": None}  # its wait stayed pending until its timeout


def test_signal_timeout_resumes_with_null(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    signal = f"never-{_token()}"
    run_id = _start_waiter(server, app, signal, timeout=1)
    run = _run(server, run_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"got": None}
    assert _signal_pauses(server, signal) == []
    assert _post_signal(server, {"signal": signal}).status_code == 404


# --- step.fetch (Gateway) ------------------------------------------------------------------------


def _fetch(server: Server, **data: Any) -> dict[str, Any]:
    event_id = server.send("compat/fetch", data)
    [run] = server.wait_runs(event_id, timeout=40)
    return run


def test_step_fetch_is_made_by_pgqueue_and_memoised(js_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, app = js_stack
    token = _token()
    run = _fetch(server, url=f"{upstream.url}/fetch/echo", method="POST", body=f"payload {token}",
                 headers={"x-test": token})
    assert run["status"] == "Completed", run
    fetched = run["output"]["fetched"]
    assert fetched["status"] == 201 and fetched["stub"] == "echo", fetched
    assert json.loads(fetched["body"]) == {"method": "POST", "body": f"payload {token}", "x_test": token}
    assert run["output"]["after"] == "after"
    # The upstream saw exactly one request, from pgqueue (not from the app), and the memo was reused
    # by the later call that ran `after-fetch`.
    sent = [r for r in upstream.requests_to("/fetch/echo") if r["headers"].get("x-test") == token]
    assert len(sent) == 1
    assert "node" not in sent[0]["headers"].get("user-agent", "").lower()
    assert app.count(run["run_id"], "after-fetch") == 1
    jobs = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    [job] = [j for j in jobs if j["name"].startswith("step.fetch")]
    assert job["output"]["status_code"] == 201 and job["output"]["headers"]["X-Stub"] == "echo"


def test_step_fetch_returns_error_statuses_as_responses(
    js_stack: tuple[Server, App], upstream: Upstream
) -> None:
    server, _ = js_stack
    run = _fetch(server, url=f"{upstream.url}/fetch/status/503")
    assert run["status"] == "Completed", run
    assert run["output"]["fetched"] == {"status": 503, "body": "busy upstream", "stub": "status"}


def test_step_fetch_transport_error_is_retried(js_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, _ = js_stack
    path = f"/fetch/flaky/{_token()}"
    run = _fetch(server, url=f"{upstream.url}{path}")
    assert run["status"] == "Completed", run
    assert run["output"]["fetched"]["body"] == "recovered after 1 failure"
    assert len(upstream.requests_to(path)) == 2


def test_step_fetch_obeys_the_egress_policy(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    # A cloud metadata address: refused in every mode unless PGQUEUE_ALLOW_LINK_LOCAL is set.
    run = _fetch(server, url="http://169.254.169.254/latest/meta-data/")
    assert run["status"] == "Completed", run
    fetched = run["output"]["fetched"]
    assert fetched["error"] == "ForbiddenAddress", fetched
    assert "169.254.169.254" in fetched["message"]


# --- step.ai.infer (AIGateway) -------------------------------------------------------------------


def _infer(server: Server, upstream: Upstream, prompt: str) -> dict[str, Any]:
    event_id = server.send("compat/ai", {"base_url": f"{upstream.url}/v1", "prompt": prompt})
    [run] = server.wait_runs(event_id, timeout=40)
    return run


def test_step_ai_infer_calls_the_model_for_the_app(js_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, _ = js_stack
    prompt = f"hello {_token()}"
    run = _infer(server, upstream, prompt)
    assert run["status"] == "Completed", run
    answer = run["output"]["answer"]
    assert answer["choices"][0]["message"]["content"] == f"echo: {prompt}"
    assert answer["model"] == "stub-model"  # filled in by the SDK's openai() model
    [request] = [r for r in upstream.requests_to("/v1/chat/completions") if prompt in r["body"]]
    assert request["headers"]["authorization"] == "Bearer sk-js-test"
    assert request["headers"]["content-type"] == "application/json"
    sent = json.loads(request["body"])
    assert sent == {"messages": [{"role": "user", "content": prompt}], "model": "stub-model"}
    # The API key was used for the request only: nothing pgqueue stored for the run mentions it.
    stored = rows(server.database_url,
                  "SELECT (SELECT string_agg(memo::text, '') FROM pgqueue.steps WHERE run_id = %(id)s)"
                  " || coalesce((SELECT string_agg(coalesce(error::text, ''), '') FROM pgqueue.attempts"
                  "              WHERE run_id = %(id)s), '') AS text", {"id": run["run_id"]})
    assert "chatcmpl-stub" in stored[0]["text"] and "sk-js-test" not in stored[0]["text"]


def test_step_ai_infer_retries_a_failed_model_call(js_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, _ = js_stack
    prompt = f"fail-once:{_token()}"
    run = _infer(server, upstream, prompt)
    assert run["status"] == "Completed", run
    assert run["output"]["answer"]["attempt"] == 2


def test_step_ai_infer_gives_up_with_the_sdks_error(js_stack: tuple[Server, App], upstream: Upstream) -> None:
    server, _ = js_stack
    before = upstream.seen["prompt:always-500"]
    run = _infer(server, upstream, "always-500")
    assert run["status"] == "Completed", run  # the function caught the step's error
    assert run["output"]["error"] == "AIGatewayError"
    assert run["output"]["message"] == "Error making AI request: unsuccessful status code: 500"
    assert upstream.seen["prompt:always-500"] - before == 3  # retries: 2 -> three attempts


# --- parallelMode "race" ------------------------------------------------------------------------


def test_race_continues_with_the_first_step_to_finish(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/race", {"slow_s": 4})
    [run] = server.wait_runs(event_id, timeout=40)
    assert run["status"] == "Completed", run
    assert run["output"]["winner"] == "fast"
    ledger = app.ledger()["ledger"]
    slow_started = ledger[f"{run['run_id']}:slow"][0]
    after_race = ledger[f"{run['run_id']}:after-race"][0]
    # The step after the race ran while the slow step was still sleeping, not after it.
    assert after_race < slow_started + 3.0, (after_race - slow_started)
    for step in ("slow", "fast", "after-race"):
        assert app.count(run["run_id"], step) == 1, step
    # The losing step, planned again by the discovery call the winner queued, is pending: no error.
    attempts = rows(server.database_url, "SELECT outcome FROM pgqueue.attempts WHERE run_id = %s",
                    (run["run_id"],))
    assert {a["outcome"] for a in attempts} == {"ok"}, attempts


def test_race_of_a_sleep_against_a_wait(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    started = time.time()
    event_id = server.send("compat/race-timer", {"sleep_s": 1, "wait_s": 8})
    [run] = server.wait_runs(event_id, timeout=40)
    assert run["status"] == "Completed", run
    assert run["output"]["first"] == "slept"
    # The code after the race ran when the sleep ended, not when the losing wait timed out (8 s);
    # the run itself ends after the wait (the SDK reports it until it has a result).
    [after] = app.ledger()["ledger"][f"{run['run_id']}:after-timer-race"]
    assert after - started < 6.0, after - started
    assert rows(server.database_url, "SELECT 1 FROM pgqueue.pauses WHERE run_id = %s", (run["run_id"],)) == []
    attempts = rows(server.database_url, "SELECT outcome FROM pgqueue.attempts WHERE run_id = %s",
                    (run["run_id"],))
    assert {a["outcome"] for a in attempts} == {"ok"}, attempts  # the re-reported wait is no error


# --- defer() (DeferAdd) --------------------------------------------------------------------------


def test_defer_is_refused_naming_the_op(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/defer", {})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Failed", run
    assert run["error"]["name"] == "UnsupportedOpcode"
    assert run["error"]["message"].startswith("unsupported: DeferAdd: JS defer()"), run["error"]
    assert "inngest/deferred.schedule" not in {e["name"] for e in server.get("/v1/events?limit=200")["data"]}
