"""Traces of runs in OpenTelemetry, exported over OTLP when the `otel` extra is installed and the
standard OTEL_* variables ask for it (README "Tracing"). Off by default.

The hooks below are what the engine calls; with tracing off each costs a global lookup, and
nothing imports opentelemetry until tracing is on, so pgqueue runs the same without the extra.

Trace context is derived, never stored: a run's trace id and its root span id are the first 16 and
the next 8 bytes of SHA-256("pgqueue.run:" + run id), so the API, the runner, any number of workers
and the Lambda executor put their spans into the run's trace without passing context through the
database; an event's trace comes from its id the same way ("pgqueue.event:"). Spans carry ids and
names (run, function, step, event, attempt, outcome, error name), never keys, payloads, step
outputs, error messages or app URLs' query strings.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgqueue.models import Event, QueueItem
    from pgqueue.telemetry.otel import Tracing

__all__ = [
    "call", "called", "configure", "derived_ids", "enabled", "events_handled", "exporters_asked_for",
    "flush", "ingested", "run_trace_id", "sending", "shutdown",
]

log = logging.getLogger(__name__)

_UNSET: Any = object()
_tracing: Tracing | None = _UNSET  # _UNSET until configure() ran (lazily, on first use)
_lock = threading.Lock()
_NO_SPAN = contextlib.nullcontext()


def derived_ids(kind: str, key: str) -> tuple[int, int]:
    """(trace id, root span id) of a run's (kind "run") or an event's (kind "event") trace."""
    digest = hashlib.sha256(f"pgqueue.{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1


def run_trace_id(run_id: str) -> str:
    """The run's trace id as 32 hex digits, as tracing back ends show it."""
    return f"{derived_ids('run', run_id)[0]:032x}"


def exporters_asked_for(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the OTEL_* variables ask for, () for tracing off.

    OTEL_SDK_DISABLED=true turns tracing off. OTEL_TRACES_EXPORTER (comma-separated: otlp, console,
    none) decides when set; unset, an OTLP endpoint (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT) turns OTLP export on. Unlike the SDK's own default ("otlp"), nothing
    set means off: a server should not try to reach localhost:4318 unless asked to."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if raw:
        names = dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip())
        return tuple(name for name in names if name != "none")
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ("otlp",)
    return ()


def configure() -> bool:
    """(Re)read the OTEL_* variables and set tracing up or off; True when on. Called by the CLI at
    start-up and otherwise on first use. Never raises for telemetry: a problem is logged and tracing
    stays off, because traces must not stop the engine."""
    global _tracing
    with _lock:
        previous, _tracing = _tracing, None
        if previous is not _UNSET and previous is not None:
            previous.shutdown()
        exporters = exporters_asked_for(os.environ)
        if not exporters:
            return False
        try:
            from pgqueue.telemetry import otel
        except ImportError as exc:
            log.warning(
                "the OTEL_* variables ask for traces (%s), but the OpenTelemetry SDK is not installed (%s):"
                " pip install 'pgqueue[otel]'; no traces are exported", ", ".join(exporters), exc)
            return False
        try:
            _tracing = otel.Tracing.from_env(exporters)
        except otel.Unsupported as exc:
            log.warning("tracing stays off: %s", exc)
            return False
        log.info("tracing on: %s", _tracing.description)
        return True


def _active() -> Tracing | None:
    if _tracing is _UNSET:
        configure()
    return _tracing


def enabled() -> bool:
    return _active() is not None


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered now (the end of a Lambda invocation: a frozen container exports nothing)."""
    if (tracing := _active()) is not None:
        tracing.flush(timeout_ms)


def shutdown() -> None:
    global _tracing
    with _lock:
        previous, _tracing = _tracing, _UNSET
    if previous is not _UNSET and previous is not None:
        previous.shutdown()


# -- hooks: the executor ----------------------------------------------------------------------------
# A failure inside a hook is logged (the first time with its traceback) and swallowed: the engine's
# work never depends on its traces.


def call(item: QueueItem) -> contextlib.AbstractContextManager[object]:
    """Around the execution of one claimed queue item: the call span (services.Services._execute)."""
    tracing = _tracing if _tracing is not _UNSET else _active()
    return _NO_SPAN if tracing is None else _Guarded(tracing, item)


def sending(headers: dict[str, str], ctx: Mapping[str, Any]) -> None:
    """Just before the request goes to the app: add the W3C `traceparent` of the call span."""
    if _tracing is not None and _tracing is not _UNSET:
        try:
            _tracing.sending(headers, ctx)
        except Exception:
            _failed("sending")


def called(result: object) -> None:
    """The call's outcome (an executor.outcome.Outcome): attributes, and a span per step it reports."""
    if _tracing is not None and _tracing is not _UNSET:
        try:
            _tracing.called(result)
        except Exception:
            _failed("called")


# -- hooks: ingest and the runner -------------------------------------------------------------------


def ingested(request_headers: Mapping[str, str], events: Sequence[Event], started_ns: int) -> None:
    """After POST /e/ stored `events`: an ingest span per event, linked to the sender's trace."""
    if (tracing := _active()) is not None:
        try:
            tracing.ingested(request_headers, events, started_ns)
        except Exception:
            _failed("ingested")


def events_handled(handled: Sequence[tuple[Mapping[str, Any], Sequence[str]]]) -> None:
    """After the runner committed: for each (event row, ids of the runs it started or joined), the
    event's span, linked to those runs' traces."""
    if handled and (tracing := _active()) is not None:
        try:
            tracing.events_handled(handled)
        except Exception:
            _failed("events_handled")


_reported: set[str] = set()


def _failed(hook: str) -> None:
    first = hook not in _reported
    _reported.add(hook)
    log.log(logging.WARNING if first else logging.DEBUG, "tracing: the %s hook failed; no span for it",
            hook, exc_info=first)


class _Guarded(contextlib.AbstractContextManager[object]):
    """tracing.call(item), with its own failures kept away from the call it wraps."""

    def __init__(self, tracing: Tracing, item: QueueItem) -> None:
        self._inner: contextlib.AbstractContextManager[object] | None = None
        try:
            self._inner = tracing.call(item)
        except Exception:
            _failed("call")

    def __enter__(self) -> object:
        if self._inner is not None:
            try:
                return self._inner.__enter__()
            except Exception:
                self._inner = None
                _failed("call")
        return None

    def __exit__(self, *exc: Any) -> bool:
        if self._inner is not None:
            try:
                self._inner.__exit__(*exc)  # never swallows the call's own exception
            except Exception:
                _failed("call")
        return False
