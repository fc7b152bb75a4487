"""REST: webhooks (create, list, change, rotate their URL, delete), their deliveries and
re-delivery; event keys kept in the database (create, list, rename, limit, revoke)."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api import deps, limits, schemas
from api.routes.events import read_body, wake
from pgqueue.admin import actions, webhook_actions
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.events import ingest
from pgqueue.store import event_keys
from pgqueue.store import webhooks as store

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])
OUTCOMES = ("accepted", "failed", "refused", "redelivered")


def base_url(request: Request) -> str:
    return (deps.settings(request).public_url or str(request.base_url)).rstrip("/")


def webhook_json(row: dict[str, Any], request: Request, key: str | None = None) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "name": row["name"],
        "key_prefix": row["key_prefix"],
        "transform": row["transform"],
        "verify": row["verify"],
        "created_at": schemas.iso(row["created_at"]),
        "updated_at": schemas.iso(row["updated_at"]),
    }
    if "failed_deliveries" in row:
        out["failed_deliveries"] = row["failed_deliveries"]
        out["last_delivery_at"] = schemas.iso(row["last_delivery_at"])
    if key is not None:  # shown once: only its hash is stored
        out["key"] = key
        out["url"] = f"{base_url(request)}/e/{key}"
    return out


def delivery_json(row: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "webhook_id": row["webhook_id"],
        "outcome": row["outcome"],
        "status": row["status_code"],
        "error": row["error"],
        "method": row["method"],
        "content_type": row["content_type"],
        "body_bytes": row["body_bytes"],
        "event_ids": row["event_ids"],
        "redelivery_of": row["redelivery_of"],
        "received_at": schemas.iso(row["received_at"]),
    }
    if full:
        out["headers"] = row["headers"]
        out["query"] = row["query"]
        body = row["body"]
        out["body"] = None
        out["body_encoding"] = None
        if body is not None:
            try:
                out["body"], out["body_encoding"] = bytes(body).decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                out["body"], out["body_encoding"] = base64.b64encode(bytes(body)).decode(), "base64"
    return out


def event_key_json(row: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "name": row["name"],
        "key_prefix": row["key_prefix"],
        "event_names": row["event_names"],
        "created_at": schemas.iso(row["created_at"]),
        "revoked_at": schemas.iso(row["revoked_at"]),
    }
    if key is not None:
        out["key"] = key
    return out


async def json_object(request: Request) -> dict[str, Any]:
    body = ingest.parse_body(await read_body(request, limits.DEFAULT_BODY_BYTES))
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


async def _webhook(conn: Any, webhook_id: str) -> dict[str, Any]:
    row = await store.get(conn, webhook_id)
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return row


# -- webhooks --------------------------------------------------------------------------------------


@router.post("/v1/webhooks", tags=["webhooks"], summary="Create a webhook (its URL is shown once)")
async def create_webhook(request: Request) -> JSONResponse:
    body = await json_object(request)
    async with deps.pool(request).connection() as conn:
        row, key = await webhook_actions.create(conn, deps.settings(request), body)
    return JSONResponse({"data": webhook_json(row, request, key)}, status_code=201)


@router.get("/v1/webhooks", tags=["webhooks"], summary="List webhooks")
async def list_webhooks(request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await store.list_webhooks(conn)
    return JSONResponse({"data": [webhook_json(r, request) for r in rows]})


@router.get("/v1/webhooks/{webhook_id}", tags=["webhooks"], summary="Get a webhook")
async def get_webhook(webhook_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await _webhook(conn, webhook_id)
    return JSONResponse({"data": webhook_json(row, request)})


@router.patch(
    "/v1/webhooks/{webhook_id}",
    tags=["webhooks"],
    summary="Change a webhook's name, transform or signature verification",
)
async def update_webhook(webhook_id: str, request: Request) -> JSONResponse:
    body = await json_object(request)
    async with deps.pool(request).connection() as conn:
        row = await webhook_actions.update(conn, deps.settings(request), webhook_id, body)
    return JSONResponse({"data": webhook_json(row, request)})


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-key",
    tags=["webhooks"],
    summary="Give a webhook a new URL (the old one stops working)",
)
async def rotate_webhook_key(webhook_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row, key = await webhook_actions.rotate_key(conn, webhook_id)
    return JSONResponse({"data": webhook_json(row, request, key)})


@router.delete("/v1/webhooks/{webhook_id}", tags=["webhooks"], summary="Delete a webhook and its deliveries")
async def delete_webhook(webhook_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if not await store.delete(conn, webhook_id):
            raise NotFound(f"webhook {webhook_id} not found")
    return JSONResponse({"data": {"id": webhook_id, "deleted": True}})


@router.get("/v1/webhooks/{webhook_id}/deliveries", tags=["webhooks"], summary="List a webhook's deliveries")
async def list_deliveries(
    webhook_id: str,
    request: Request,
    outcome: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> JSONResponse:
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"`outcome` must be one of {', '.join(OUTCOMES)}")
    async with deps.pool(request).connection() as conn:
        await _webhook(conn, webhook_id)
        rows = await store.list_deliveries(conn, webhook_id, outcome=outcome, before_id=cursor, limit=limit)
    return JSONResponse(
        {
            "data": [delivery_json(r) for r in rows],
            "metadata": {"cursor": rows[-1]["id"] if len(rows) == limit else None},
        }
    )


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}",
    tags=["webhooks"],
    summary="Get a delivery with its kept request",
)
async def get_delivery(webhook_id: str, delivery_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await store.get_delivery(conn, webhook_id, delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} not found")
    return JSONResponse({"data": delivery_json(row, full=True)})


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    tags=["webhooks"],
    summary="Run a failed delivery through the current transform again",
)
async def redeliver(webhook_id: str, delivery_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        delivery = await webhook_actions.redeliver(conn, deps.settings(request), webhook_id, delivery_id)
    await wake(request, delivery.queued)
    return JSONResponse(
        {
            "data": {
                "delivery_id": delivery.delivery_id,
                "redelivery_of": delivery_id,
                "ids": [e.id for e in delivery.events],
            }
        }
    )


# -- event keys ------------------------------------------------------------------------------------


@router.post("/v1/event-keys", tags=["event keys"], summary="Create an event key (shown once)")
async def create_event_key(request: Request) -> JSONResponse:
    body = await json_object(request)
    async with deps.pool(request).connection() as conn:
        row, key = await actions.create_event_key(conn, body.get("name"), body.get("event_names"))
    return JSONResponse({"data": event_key_json(row, key)}, status_code=201)


@router.get("/v1/event-keys", tags=["event keys"], summary="List event keys (never the keys themselves)")
async def list_event_keys(request: Request, include_revoked: bool = True) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await event_keys.list_keys(conn, include_revoked=include_revoked)
    return JSONResponse({"data": [event_key_json(r) for r in rows]})


@router.patch(
    "/v1/event-keys/{key_id}", tags=["event keys"], summary="Rename an event key or change its filter"
)
async def update_event_key(key_id: str, request: Request) -> JSONResponse:
    body = await json_object(request)
    async with deps.pool(request).connection() as conn:
        row = await actions.update_event_key(conn, key_id, body)
    return JSONResponse({"data": event_key_json(row)})


@router.delete("/v1/event-keys/{key_id}", tags=["event keys"], summary="Revoke an event key")
async def revoke_event_key(key_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.revoke_event_key(conn, key_id)
    return JSONResponse({"data": event_key_json(row)})
