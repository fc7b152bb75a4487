"""Traces, end to end: a real `pgqueue serve --no-workers` (the API) and a real `pgqueue worker` (runner
and executor) export with the real OTLP/HTTP exporter to a real receiver on loopback (tests/helpers/
otlp.py), while a scripted app on loopback records the `traceparent` of every call it gets.

What must hold: one trace per run, whose id is derived from the run id alone (so the two processes
agree without sharing anything), with a root span, a span per call carrying the app's traceparent, a
span per step; an event's ingest span linked to the sender and, through the event's span, to the runs
it started; and no payload, output, error message or key in any span."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pgqueue.protocol import signing
from tests.compat.conftest import FAST_ENV, SIGNING_KEY, Server, start_server
from tests.helpers.otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.helpers.procs import Proc, pgqueue_argv, start_process

SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}
SECRET_DATA = "payload-value-7f3a"
SECRET_OUTPUT = "output-value-91c2"
SECRET_ERROR = "error-message-5d0e"
SENDER_TRACE, SENDER_SPAN = "ab" * 16, "cd" * 8


def derived(kind: str, key: str) -> tuple[str, str]:
    """The documented derivation (README "Tracing"), written out independently of pgqueue.telemetry."""
    digest = hashlib.sha256(f"pgqueue.{kind}:{key}".encode()).digest()
    return digest[:16].hex(), digest[16:24].hex()


@dataclass
class Seen:
    fn: str
    attempt: int
    step_ids: list[str]
    traceparent: str | None


SEEN: dict[str, list[Seen]] = defaultdict(list)  # run id -> the calls the app got


class TracedApp(BaseHTTPRequestHandler):
    """A scripted SDK: `steps` runs a step, sleeps 1 s, returns; `flaky` fails its first attempt;
    `debounced` returns (its events wait a second, and are started by the runner, not at ingest)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in SDK.items():
            self.send_header(k, v)
        self.send_header("X-Inngest-Signature", signing.sign(raw, SIGNING_KEY))  # as an SDK signs its answers
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        fn = parse_qs(urlsplit(self.path).query)["fnId"][0].removeprefix("trace-")
        ctx, steps = request["ctx"], request["steps"]
        SEEN[ctx["run_id"]].append(Seen(fn, ctx["attempt"], sorted(steps), self.headers.get("traceparent")))
        if fn == "steps":
            if "load" not in steps:
                self._send(206, [{"op": "StepRun", "id": "load", "name": "load",
                                  "data": {"v": SECRET_OUTPUT}}])
            elif "nap" not in steps:
                self._send(206, [{"op": "Sleep", "id": "nap", "name": "nap", "opts": {"duration": "1s"}}])
            else:
                self._send(200, "done")
        elif fn == "flaky" and ctx["attempt"] == 0:
            self._send(500, {"name": "Error", "message": SECRET_ERROR})
        else:
            self._send(200, "ok")


@dataclass
class Stack:
    api: Server
    worker: Proc
    receiver: Receiver


@pytest.fixture(scope="module")
def stack(module_database_url: str) -> Iterator[Stack]:
    app = ThreadingHTTPServer(("127.0.0.1", 0), TracedApp)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{app.server_address[1]}/"
    with otlp_receiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_SERVICE_NAME": "pgqueue-test", "NO_PROXY": "127.0.0.1,localhost"}
        api = start_server(module_database_url, mode="serve", extra_args=("--no-workers",),
                           env={**otel, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=api",
                                "PGQUEUE_INLINE_START": "1"})  # runs of plain functions start at ingest
        worker = start_process(
            "pgqueue-worker-otel", pgqueue_argv("worker"), url="",
            env={**FAST_ENV, **otel, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=worker",
                 "DATABASE_URL": module_database_url, "PGQUEUE_SIGNING_KEY": SIGNING_KEY,
                 "PGQUEUE_ALLOW_LOOPBACK": "1"})
        try:
            functions = [
                {"id": f"trace-{name}", "name": name, "triggers": [{"event": f"trace/{name}"}],
                 "steps": {"step": {"id": "step", "name": "step", "retries": {"attempts": 1},
                                    "runtime": {"type": "http", "url": f"{base}?fnId=trace-{name}"}}}}
                for name in ("steps", "flaky", "debounced")
            ]
            functions[2]["debounce"] = {"period": "1s"}
            body = {"appName": "tracer", "url": base, "sdk": "py:v0.5.19", "functions": functions}
            r = httpx.post(f"{api.url}/fn/register", json=body, headers=api.headers)
            assert r.status_code == 200, r.text
            yield Stack(api, worker, receiver)
        finally:
            worker.terminate()
            api.proc.terminate()
            app.shutdown()


def run_of(stack: Stack, name: str, **headers: str) -> tuple[str, dict[str, Any]]:
    with stack.api.client() as c:
        event = {"name": f"trace/{name}", "data": {"secret": SECRET_DATA}}
        r = c.post(f"/e/{stack.api.event_key}", json=event, headers=headers)
    assert r.status_code == 200, r.text
    event_id = str(r.json()["ids"][0])
    [run] = stack.api.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", (run, stack.worker.log())
    return event_id, run


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def named(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_ns)


def test_a_run_is_one_trace_with_spans_per_call_and_step_and_the_app_gets_their_ids(stack: Stack) -> None:
    event_id, run = run_of(stack, "steps", traceparent=f"00-{SENDER_TRACE}-{SENDER_SPAN}-01")
    run_id = run["run_id"]
    trace_id, root_id = derived("run", run_id)

    def complete(got: list[ReceivedSpan]) -> bool:
        trace = in_trace(got, trace_id)
        counts = [len(named(trace, prefix)) for prefix in ("run ", "call ", "step ", "pgqueue.sleep")]
        return counts == [1, 3, 2, 1]

    trace = in_trace(stack.receiver.wait_for(complete), trace_id)

    # The root: derived id, from the run's creation to its first call, linked to the event's span.
    [root] = named(trace, "run ")
    assert root.span_id == root_id and root.parent_span_id == ""
    assert root.attributes["pgqueue.run.id"] == run_id
    assert root.name == f"run {root.attributes['pgqueue.function.slug']}" and "trace-steps" in root.name
    assert root.links == [derived("event", event_id)]

    # A call span per call, children of the root, in the worker process, with what happened.
    calls = named(trace, "call ")
    assert [c.parent_span_id for c in calls] == [root_id] * 3
    assert {c.kind for c in calls} == {"CLIENT"}
    assert {c.resource["service.instance.id"] for c in calls} == {"worker"}
    assert [c.attributes["pgqueue.outcome"] for c in calls] == ["steps", "steps", "done"]
    assert [c.attributes["pgqueue.attempt"] for c in calls] == [0, 0, 0]
    assert [c.attributes.get("pgqueue.run.first_call", False) for c in calls] == [True, False, False]
    function_ids = {c.attributes["pgqueue.function.id"] for c in calls}
    assert len(function_ids) == 1 and function_ids != {""}
    assert all(c.attributes["pgqueue.run.id"] == run_id for c in calls)
    assert all(c.attributes["pgqueue.queue.wait_ms"] >= 0 for c in calls)
    assert all(c.attributes["server.address"] == "127.0.0.1" for c in calls)
    assert root.end_ns <= calls[0].start_ns + 1_000_000  # the root ends where the first call starts

    # The app saw each call span as its parent: traceparent = 00-<run trace>-<that call's span>-01.
    seen = SEEN[run_id]
    assert [s.step_ids for s in seen] == [[], ["load"], ["load", "nap"]]
    assert [s.traceparent for s in seen] == [f"00-{trace_id}-{c.span_id}-01" for c in calls]

    # A span per step, under the call that reported it.
    load, nap = named(trace, "step ")
    assert (load.name, load.parent_span_id) == ("step load", calls[0].span_id)
    assert load.attributes["pgqueue.step.op"] == "StepRun"
    assert load.attributes["pgqueue.step.outcome"] == "completed"
    assert (nap.name, nap.parent_span_id) == ("step nap", calls[1].span_id)
    assert nap.attributes["pgqueue.step.op"] == "Sleep"
    assert nap.attributes["pgqueue.step.outcome"] == "sleeping"
    assert calls[0].start_ns <= load.start_ns <= load.end_ns <= calls[0].end_ns

    # The sleep coming due is an item of its own, between the second and third call.
    [sleep] = named(trace, "pgqueue.sleep")
    assert sleep.parent_span_id == root_id and sleep.attributes["pgqueue.step.id"] == "nap"
    assert calls[1].end_ns <= sleep.start_ns <= calls[2].start_ns
    assert sleep.start_ns - calls[1].end_ns >= 900_000_000  # it slept its second


@pytest.mark.parametrize(("name", "starter"), [("steps", "api"), ("debounced", "worker")])
def test_an_event_links_to_its_sender_and_to_the_runs_it_started(
    stack: Stack, name: str, starter: str,
) -> None:
    event_id, run = run_of(stack, name, traceparent=f"00-{SENDER_TRACE}-{SENDER_SPAN}-01")
    event_trace, event_span = derived("event", event_id)
    spans = stack.receiver.wait_for(lambda got: len(in_trace(got, event_trace)) == 2)

    # The event's root span comes from whoever started its runs: the API at ingest (PGQUEUE_INLINE_START)
    # or, for a debounced function, the runner in the worker; the ingest span from the API. One trace.
    [event] = named(in_trace(spans, event_trace), "event ")
    [ingest] = named(in_trace(spans, event_trace), "ingest ")
    assert (event.name, event.span_id, event.parent_span_id) == (f"event trace/{name}", event_span, "")
    assert event.resource["service.instance.id"] == starter and event.kind == "CONSUMER"
    assert event.links == [derived("run", run["run_id"])]
    assert event.attributes["pgqueue.run.ids"] == [run["run_id"]]
    assert (ingest.name, ingest.parent_span_id, ingest.kind) == (f"ingest trace/{name}", event_span, "SERVER")
    assert ingest.resource["service.instance.id"] == "api"
    assert ingest.links == [(SENDER_TRACE, SENDER_SPAN)]
    assert ingest.attributes["pgqueue.event.id"] == event_id
    assert ingest.start_ns <= ingest.end_ns <= event.end_ns


def test_a_retried_call_stays_in_the_run_trace_with_its_error_name_only(stack: Stack) -> None:
    _, run = run_of(stack, "flaky")
    trace_id, root_id = derived("run", run["run_id"])
    spans = stack.receiver.wait_for(lambda got: len(named(in_trace(got, trace_id), "call ")) == 2)

    first, second = named(in_trace(spans, trace_id), "call ")
    assert [first.attributes["pgqueue.attempt"], second.attributes["pgqueue.attempt"]] == [0, 1]
    assert first.attributes["pgqueue.outcome"] == "error" and first.attributes["error.type"] == "Error"
    assert first.attributes["http.response.status_code"] == 500
    assert first.attributes["pgqueue.error.retriable"] is True
    assert (first.status_code, first.status_message) == (2, "Error")
    assert second.attributes["pgqueue.outcome"] == "done" and second.status_code == 0
    assert first.parent_span_id == second.parent_span_id == root_id
    expected = [f"00-{trace_id}-{c.span_id}-01" for c in (first, second)]
    assert [s.traceparent for s in SEEN[run["run_id"]]] == expected


def test_no_span_carries_payloads_outputs_error_messages_or_keys(stack: Stack) -> None:
    run_of(stack, "flaky")
    spans = stack.receiver.spans()

    assert len(spans) > 10
    leaked = [s.name for s in spans for secret in (SECRET_DATA, SECRET_OUTPUT, SECRET_ERROR, SIGNING_KEY,
                                                   stack.api.event_key) if secret in s.text]
    assert leaked == []
    assert set(stack.receiver.paths) == {"/v1/traces"}
