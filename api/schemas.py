"""Response shapes of the REST API (Inngest's v1 field names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgqueue.models import RunStatus


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
