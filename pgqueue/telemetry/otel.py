"""The OpenTelemetry side of pgqueue.telemetry: imported only when tracing is on (the `otel` extra).

pgqueue keeps a TracerProvider of its own rather than the global one, so turning pgqueue's traces on
does not also turn on every library's spans (FastAPI's own request spans, say); its call span is
made current while a call runs, so auto-instrumentation (httpx, psycopg) nests under it.

A trace, for one run (ids derived from the run id, see pgqueue.telemetry):

    run <function>                 root: from the run's creation to its first claim; links to its events
      call <function>              one per queue item executed (CLIENT; its id is the app's traceparent)
        step <name>                one per step the call reported (StepRun, Sleep, WaitForEvent, ...)
      pgqueue.sleep                a sleep or wait timeout coming due (no app call)

and for one event (ids derived from the event id):

    event <name>                   root: from storing the event to the runner starting its runs; links to them
      ingest <name>                POST /e/ (SERVER); links to the sender's span (its traceparent)
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pgqueue import ids
from pgqueue.models import Event, QueueItem
from pgqueue.protocol.outcome import CallError, Ops, RunDone
from pgqueue.telemetry import derived_ids

SCOPE = "pgqueue"
MAX_LINKS = 32  # a batch run links to at most this many of its events (pgqueue.event.count says how many)
MAX_LISTED_RUNS = 100
# Ingest spans per request: the first events of a large batch get one (every event still gets its own
# `event` span from the runner); a span per event of a 5,000-event request would add to its latency.
MAX_INGEST_SPANS = 100
STEP_OUTCOMES = {
    "StepRun": "completed", "Step": "completed", "StepFailed": "failed", "StepPlanned": "planned",
    "Sleep": "sleeping", "WaitForEvent": "waiting", "InvokeFunction": "invoking", "StepNotFound": "not found",
}
_PROPAGATOR = TraceContextTextMapPropagator()


class Unsupported(Exception):
    """The OTEL_* variables ask for something this installation cannot do."""


# Span ids for the two derived roots are forced through the provider's id generator; every other
# id is random.
_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("pgqueue_forced_ids",
                                                                                      default=None)


class DerivedIds(RandomIdGenerator):
    def generate_trace_id(self) -> int:
        forced = _forced_ids.get()
        return forced[0] if forced else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _forced_ids.get()
        return forced[1] if forced else super().generate_span_id()

    def is_trace_id_random(self) -> bool:
        return _forced_ids.get() is None


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise Unsupported(f"OTEL_TRACES_EXPORTER={name!r} is not one pgqueue knows (otlp, console or none)")
    env = os.environ
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout, compression and TLS from OTEL_EXPORTER_OTLP_*
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise Unsupported(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc"
                " (pip install it, or use http/protobuf, which pgqueue[otel] includes)") from None
        return GrpcExporter()
    raise Unsupported(f"OTLP protocol {protocol!r} is not supported: use http/protobuf (or grpc)")


def _short(value: object, limit: int = 200) -> str:
    """Names the app chooses (steps, errors) as they go into a span: text, bounded."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ns(value: datetime) -> int:
    return int(value.timestamp() * 1e9)


def _context(trace_id: int, span_id: int, sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


@dataclass
class CallState:
    """One executed queue item while its span is open."""

    item: QueueItem
    span: trace.Span
    started_ns: int
    sent_ns: int | None = None


_current_call: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("pgqueue_call", default=None)


class Tracing:
    def __init__(self, provider: TracerProvider, description: str) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)
        self.description = description

    @classmethod
    def from_env(cls, exporters: Sequence[str], *, processor: SpanProcessor | None = None) -> Tracing:
        """The sampler (OTEL_TRACES_SAMPLER), resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) and
        batching (OTEL_BSP_*) come from the SDK's own reading of the environment."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "pgqueue"}))
        provider = TracerProvider(resource=resource, id_generator=DerivedIds())
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        if processor is not None:
            provider.add_span_processor(processor)
        service = resource.attributes[SERVICE_NAME]
        return cls(provider, f"exporting spans ({', '.join(exporters)}) as service {service}")

    def flush(self, timeout_ms: int) -> None:
        self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()

    # -- derived parents ---------------------------------------------------------------------------

    def _sampled(self, trace_id: int, name: str) -> bool:
        """What the sampler decides for a derived root: deterministic for every standard sampler
        (they look at the trace id only), so each process agrees about a derived parent."""
        return self.provider.sampler.should_sample(None, trace_id, name).decision.is_sampled()

    def _derived(self, family: str, key: str) -> SpanContext:
        trace_id, span_id = derived_ids(family, key)
        return _context(trace_id, span_id, self._sampled(trace_id, family))

    def _root(self, family: str, key: str, name: str, **kwargs: Any) -> trace.Span:
        """A root span with the derived ids of `family` ("run" or "event") and `key`."""
        token = _forced_ids.set(derived_ids(family, key))
        try:
            return self.tracer.start_span(name, context=context_api.Context(), **kwargs)
        finally:
            _forced_ids.reset(token)

    # -- the executor ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def call(self, item: QueueItem) -> Iterator[CallState]:
        now = time.time_ns()
        run = self._derived("run", item.run_id)
        attributes: dict[str, Any] = {
            "pgqueue.run.id": item.run_id,
            "pgqueue.function.id": str(item.function_id),
            "pgqueue.item.id": item.id,
            "pgqueue.item.kind": item.kind,
            "pgqueue.step.id": item.step_id,
            "pgqueue.attempt": item.attempt,
            "pgqueue.max_attempts": item.max_attempts,
            # due -> claimed: how long the work waited in the queue (flow control, a busy worker)
            "pgqueue.queue.wait_ms": max(0.0, (now - _ns(item.run_at)) / 1e6),
        }
        if item.step_name:
            attributes["pgqueue.step.name"] = item.step_name
        kind = SpanKind.CLIENT if item.kind == "call" else SpanKind.INTERNAL
        name = "call" if item.kind == "call" else f"pgqueue.{item.kind}"
        span = self.tracer.start_span(name, context=trace.set_span_in_context(trace.NonRecordingSpan(run)),
                                      kind=kind, attributes=attributes, start_time=now)
        state = CallState(item, span, now)
        token = _current_call.set(state)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                yield state
        except BaseException as exc:
            # The exception's type only: an engine error's message can quote stored data.
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _current_call.reset(token)
            span.end()

    def sending(self, headers: dict[str, str], ctx: Mapping[str, Any]) -> None:
        state = _current_call.get()
        if state is None:
            return
        state.sent_ns = time.time_ns()
        span, item = state.span, state.item
        slug = str(ctx.get("slug") or "")
        url = urlsplit(str(ctx.get("url") or ""))
        details = {"pgqueue.function.slug": slug, "pgqueue.app.name": str(ctx.get("app_name") or ""),
                   "http.request.method": "POST", "server.address": url.hostname or ""}
        if url.port:
            details["server.port"] = url.port
        span.set_attributes(details)
        span.update_name(f"call {slug}")
        span_context = span.get_span_context()
        if span_context.is_valid:
            headers["traceparent"] = (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
                                      f"{int(span_context.trace_flags) & 0x01:02x}")
        if item.run_started or ctx.get("started_now"):  # the claim started the run, or run_context did
            span.set_attribute("pgqueue.run.first_call", True)
            self._run_root(item, ctx, slug, end_ns=state.started_ns)

    def _run_root(self, item: QueueItem, ctx: Mapping[str, Any], slug: str, *, end_ns: int) -> None:
        """The run's root span, sent once: by the call that starts the run (its first)."""
        try:
            start_ns = ids.ulid_time_ms(item.run_id) * 1_000_000  # run ids are ULIDs: their creation time
        except ValueError:
            start_ns = _ns(item.run_at)
        event_ids = [str(e) for e in ctx.get("event_ids") or ()]
        links = [Link(self._derived("event", event_id)) for event_id in event_ids[:MAX_LINKS]]
        attributes = {"pgqueue.run.id": item.run_id, "pgqueue.function.id": str(item.function_id),
                      "pgqueue.function.slug": slug, "pgqueue.app.name": str(ctx.get("app_name") or ""),
                      "pgqueue.event.count": len(event_ids)}
        span = self._root("run", item.run_id, f"run {slug}", links=links, start_time=min(start_ns, end_ns),
                          attributes=attributes)
        span.end(end_time=end_ns)

    def called(self, result: object) -> None:
        state = _current_call.get()
        if state is None:
            return
        span = state.span
        if isinstance(result, RunDone):
            span.set_attribute("pgqueue.outcome", "done")
        elif isinstance(result, CallError):
            name = _short(result.error.get("name") or "Error")
            span.set_attributes({"pgqueue.outcome": "error", "error.type": name,
                                 "pgqueue.error.retriable": result.retriable})
            if result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            span.set_status(Status(StatusCode.ERROR, name))  # the name only: messages can hold user data
        elif isinstance(result, Ops):
            span.set_attributes({"pgqueue.outcome": "steps", "pgqueue.steps": len(result.ops)})
            self._steps(state, result)

    def _steps(self, state: CallState, result: Ops) -> None:
        """A span per step the call reported; each ran (or was planned) while the app was answering."""
        item, now = state.item, time.time_ns()
        parent = trace.set_span_in_context(state.span)
        for op in result.ops:
            if op.op == "RunComplete":
                state.span.set_attribute("pgqueue.outcome", "done")
                continue
            outcome = STEP_OUTCOMES.get(op.op, "unsupported")
            attributes: dict[str, Any] = {
                "pgqueue.run.id": item.run_id, "pgqueue.function.id": str(item.function_id),
                "pgqueue.step.id": _short(op.id), "pgqueue.step.name": _short(op.label),
                "pgqueue.step.op": _short(op.op),
                "pgqueue.attempt": item.attempt,
            }
            error_name = None
            if op.op == "StepError":
                retried = not result.no_retry and item.attempt + 1 < item.max_attempts
                outcome = "retrying" if retried else "failed"
            if op.op in ("StepError", "StepFailed"):
                error = op.error if isinstance(op.error, dict) else {}
                error_name = _short(error.get("name") or "Error")
                attributes["error.type"] = error_name
            attributes["pgqueue.step.outcome"] = outcome
            span = self.tracer.start_span(f"step {_short(op.label)}", context=parent, attributes=attributes,
                                          start_time=state.sent_ns or state.started_ns)
            if error_name is not None:
                span.set_status(Status(StatusCode.ERROR, error_name))
            span.end(end_time=now)

    # -- ingest and the runner ---------------------------------------------------------------------

    def ingested(self, request_headers: Mapping[str, str], events: Sequence[Event], started_ns: int) -> None:
        now = time.time_ns()
        sender = trace.get_current_span().get_span_context()  # a request span from auto-instrumentation
        if not sender.is_valid:
            sender = trace.get_current_span(_PROPAGATOR.extract(dict(request_headers))).get_span_context()
        links = [Link(sender)] if sender.is_valid else []
        for event in events[:MAX_INGEST_SPANS]:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(self._derived("event", event.id)))
            attributes = {"pgqueue.event.id": event.id, "pgqueue.event.name": event.name,
                          "pgqueue.events.ingest.events": len(events)}
            span = self.tracer.start_span(f"ingest {event.name}", context=parent, kind=SpanKind.SERVER,
                                          links=links, start_time=started_ns, attributes=attributes)
            span.end(end_time=now)

    def events_handled(self, handled: Sequence[tuple[Mapping[str, Any], Sequence[str]]]) -> None:
        now = time.time_ns()
        for row, run_ids in handled:
            name = str(row["name"])
            if name.startswith("inngest/") and not run_ids:
                continue  # the engine's own events (function.finished, ...) that started nothing
            unique = list(dict.fromkeys(run_ids))
            received = row.get("received_at")
            start_ns = _ns(received) if isinstance(received, datetime) else now
            span = self._root(
                "event", str(row["id"]), f"event {name}", kind=SpanKind.CONSUMER,
                start_time=min(start_ns, now),
                links=[Link(self._derived("run", run_id)) for run_id in unique[:MAX_LINKS]],
                attributes={"pgqueue.event.id": str(row["id"]), "pgqueue.event.name": name,
                            "pgqueue.event.runs": len(unique), "pgqueue.run.ids": unique[:MAX_LISTED_RUNS]})
            span.end(end_time=now)
