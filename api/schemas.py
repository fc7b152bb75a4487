"""Response shapes of the REST API (Inngest's v1 field names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgqueue.models import RunStatus
from pgqueue.runs import trace


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["id"],
        "function_id": str(row["function_id"]),
        "function_slug": row["function_slug"],
        "app_id": str(row["app_id"]),
        "event_id": row["event_id"],
        "event_ids": list(row["event_ids"]),
        "status": RunStatus(row["status"]).api_name,
        "run_started_at": iso(row["started_at"] or row["created_at"]),
        "created_at": iso(row["created_at"]),
        "ended_at": iso(row["ended_at"]),
        "output": row["error"] if row["status"] == "failed" and row["output"] is None else row["output"],
        "error": row["error"],
    }


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "internal_id": row["id"],
        "id": row["external_id"] or row["id"],
        "external_id": row["external_id"],
        "name": row["name"],
        "data": row["data"],
        "user": row["user"],
        "ts": row["ts"],
        "v": row["v"],
        "received_at": iso(row["received_at"]),
        "skip_reason": row["skip_reason"],
        "sessions": row.get("sessions"),
    }


def function_json(row: dict[str, Any]) -> dict[str, Any]:
    config = row["config"]
    return {
        "id": str(row["id"]),
        "slug": row["slug"],
        "name": row["name"],
        "url": row["url"],
        "triggers": config.get("triggers", []),
        "config": config,
        "retries": row["retries"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "archived": row["archived_at"] is not None,
        "paused": row["paused_at"] is not None,
    }


def app_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "url": row["url"],
        "sdk_language": row["sdk_language"],
        "sdk_version": row["sdk_version"],
        "framework": row["framework"],
        "app_version": row["app_version"],
        "sync_error": row["sync_error"],
        "synced_at": iso(row["synced_at"]),
        "function_count": row.get("function_count"),
    }


def status_name(status: str) -> str:
    return RunStatus(status).api_name


FLOW_CONTROL_KEYS = (
    "concurrency", "throttle", "rateLimit", "debounce", "batchEvents", "priority", "idempotency",
    "singleton", "timeouts", "cancel",
)


def flow_control(config: dict[str, Any]) -> dict[str, Any]:
    """The flow-control part of a synced function configuration (only the settings it has)."""
    return {key: config[key] for key in FLOW_CONTROL_KEYS if config.get(key) not in (None, [], {})}


def metrics_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (iso(v) if isinstance(v, datetime) else v) for k, v in row.items()}


def housekeeping_json(counts: dict[str, int]) -> dict[str, int]:
    """The rescuer's running totals (pgqueue.housekeeping_counts) beside the headline numbers."""
    return {"rescued_leases_total": counts.get("leases_expired", 0),
            "missed_unparks_total": counts.get("missed_unparks", 0)}


def queue_depth_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "function_id": str(row["function_id"]),
        "function_slug": row["function_slug"],
        "app_name": row["app_name"],
        "status": row["status"],
        "items": row["items"],
        "runs": row["runs"],
        "oldest_run_at": iso(row["oldest_run_at"]),
        "oldest_age_s": row["oldest_age_s"],
    }


def lease_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": row["item_id"],
        "run_id": row["run_id"],
        "function_id": str(row["function_id"]),
        "function_slug": row["function_slug"],
        "kind": row["kind"],
        "step_id": row["step_id"],
        "step_name": row["step_name"],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "leased_by": row["leased_by"],
        "leased_at": iso(row["leased_at"]),
        "lease_expires_at": iso(row["lease_expires_at"]),
        "expired": row["expired"],
    }


def stuck_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "function_id": str(row["function_id"]),
        "function_slug": row["function_slug"],
        "status": status_name(row["status"]),
        "reason": row["reason"],
        "since": iso(row["since"]),
        "age_s": row["age_s"],
        "detail": row["detail"],
    }


def timeline_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "entry": row["entry"],
        "at": iso(row["at"]),
        "step_id": row["step_id"],
        "step_name": row["step_name"],
        "op": row["op"],
        "attempt": row["attempt"],
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "duration_ms": row["duration_ms"],
        "output": row["output"],
        "error": row["error"],
        "status": status_name(row["status"]) if row["status"] else None,
    }


def _info_json(info: trace.StepInfo | None) -> dict[str, Any] | None:
    match info:
        case trace.SleepInfo():
            return {"type": "sleep", "sleep_until": iso(info.sleep_until)}
        case trace.WaitInfo():
            return {"type": "wait", "event_name": info.event_name, "expression": info.expression,
                    "timeout": iso(info.timeout), "found_event_id": info.found_event_id,
                    "timed_out": info.timed_out}
        case trace.InvokeInfo():
            return {"type": "invoke", "function_id": info.function_id,
                    "triggering_event_id": info.triggering_event_id, "run_id": info.run_id,
                    "timeout": iso(info.timeout), "timed_out": info.timed_out}
        case trace.SignalInfo():
            return {"type": "signal", "signal": info.signal, "timeout": iso(info.timeout),
                    "timed_out": info.timed_out}
    return None


def span_json(span: trace.Span) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "name": span.name,
        "kind": span.kind.value,
        "status": span.status.value,
        "queued_at": iso(span.queued_at),
        "started_at": iso(span.started_at),
        "ended_at": iso(span.ended_at),
        "duration_ms": span.duration_ms,
        "step_id": span.step_id,
        "step_op": span.step_op.value if span.step_op else None,
        "attempt": span.attempt,
        "status_code": span.status_code,
        "output_id": span.output_id,
        "info": _info_json(span.info),
        "children": [span_json(child) for child in span.children],
    }


def trace_json(t: trace.Trace) -> dict[str, Any]:
    return {"run_id": t.run_id, "function_id": t.function_id, "function_slug": t.function_slug,
            "app_id": t.app_id, "root": span_json(t.root)}
