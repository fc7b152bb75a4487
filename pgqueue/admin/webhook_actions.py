"""Webhooks end to end: create and change them (a transform that compiles, a secret sealed), take
a delivery (signature, transform, the events stored as POST /e stores them, the delivery recorded
whatever happens) and re-deliver a failed one once the transform is fixed.

Nothing a provider sends is lost: a delivery whose transform throws, runs out of its budget or
returns no valid event answers 4xx with the reason and is kept with its raw request; a refused one
(a bad signature, a body over the limit) is recorded without its body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput, NotFound, PayloadTooLarge, PgQueueError, Unauthorized
from pgqueue.events import deliveries, secrets, signatures, transforms
from pgqueue.models import Event
from pgqueue.settings import Settings
from pgqueue.store import webhooks as store

log = logging.getLogger("pgqueue.webhooks")

MAX_NAME = 200


def _name(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > MAX_NAME:
        raise InvalidInput(f"`name` must be a non-empty string of at most {MAX_NAME} characters")
    return raw.strip()


def _verification(raw: Any, settings: Settings) -> tuple[dict[str, Any], str]:
    if not isinstance(raw, dict):
        raise InvalidInput('`verify` must be an object like {"scheme": "github", "secret": "..."} or null')
    verification = signatures.Verification.from_json(raw)
    signatures.check_secret(verification, raw.get("secret"))
    return verification.to_json(), secrets.seal(str(raw["secret"]), settings.signing_keys)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the API shows it: never its key (only a prefix) nor its secret."""
    return {k: v for k, v in row.items() if k != "secret_enc"}


async def create(conn: Conn, settings: Settings, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A new webhook and its key (the key is returned once and stored as a hash)."""
    name = _name(body.get("name"))
    source = body.get("transform") or transforms.DEFAULT_TRANSFORM
    transforms.check_source(source)
    verify, sealed = (None, None)
    if body.get("verify") is not None:
        verify, sealed = _verification(body["verify"], settings)
    key = deliveries.new_key()
    row = await store.create(conn, name=name, key=key, transform=source, verify=verify, secret_enc=sealed)
    return row, key


async def update(conn: Conn, settings: Settings, webhook_id: str, body: dict[str, Any]) -> dict[str, Any]:
    name = _name(body["name"]) if "name" in body else None
    source = body.get("transform")
    if source is not None:
        transforms.check_source(source)
    set_verify = "verify" in body
    verify, sealed = (None, None)
    if set_verify and body["verify"] is not None:
        verify, sealed = _verification(body["verify"], settings)
    row = await store.update(
        conn, webhook_id, name=name, transform=source, set_verify=set_verify, verify=verify, secret_enc=sealed
    )
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return row


async def rotate_key(conn: Conn, webhook_id: str) -> tuple[dict[str, Any], str]:
    """A new URL for the webhook; the old one stops working at once."""
    key = deliveries.new_key()
    row = await store.update(conn, webhook_id, key=key)
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return row, key


@dataclass
class Delivery:
    """One request to a webhook's URL, as read by the API."""

    body: bytes
    content_type: str | None
    headers: dict[str, str]  # canonical names (deliveries.header_object)
    query: dict[str, list[str]]
    method: str = "POST"
    events: list[Event] = field(default_factory=list)
    delivery_id: str | None = None
    queued: int = 0


async def refuse(conn: Conn, webhook: dict[str, Any], delivery: Delivery, error: PgQueueError) -> None:
    """Record a refused delivery (bad signature, too large): its headers, never its body."""
    await store.record_delivery(
        conn,
        webhook["id"],
        outcome="refused",
        status_code=error.status,
        error=error.message,
        method=delivery.method,
        content_type=delivery.content_type,
        headers=deliveries.kept_headers(delivery.headers),
        query=delivery.query,
        body=None,
        body_bytes=len(delivery.body),
    )


def check_signature(webhook: dict[str, Any], settings: Settings, delivery: Delivery) -> None:
    if webhook.get("verify") is None:
        return
    verification = signatures.Verification.from_json(webhook["verify"])
    try:
        secret = secrets.open_sealed(webhook["secret_enc"], settings.signing_keys)
    except secrets.SecretUnreadable as exc:
        log.error("webhook %s: %s", webhook["id"], exc)
        raise Unauthorized(f"the signature cannot be checked: {exc}") from None
    key = signatures.check_secret(verification, secret)
    lowered = {k.lower(): v for k, v in delivery.headers.items()}
    signatures.verify(verification, key, delivery.body, lowered)


async def transform(webhook: dict[str, Any], settings: Settings, delivery: Delivery) -> list[Event]:
    inputs = deliveries.transform_inputs(
        delivery.body, delivery.content_type, delivery.headers, delivery.query
    )
    budget = transforms.Budget(
        time_s=settings.transform_time_limit_ms / 1000,
        memory_bytes=settings.transform_memory_mb * transforms.MiB,
    )
    result = await transforms.run(webhook["transform"], inputs, budget)
    return deliveries.events_from(
        result, max_event_bytes=settings.max_event_bytes, max_events=settings.max_events_per_request
    )


async def deliver(conn: Conn, webhook: dict[str, Any], settings: Settings, delivery: Delivery) -> Delivery:
    """Verify, transform, store. A failure is recorded (with the raw request when the signature
    held) before it is raised to the caller, who answers with it."""
    try:
        check_signature(webhook, settings, delivery)
    except Unauthorized as exc:
        await refuse(conn, webhook, delivery, exc)
        raise
    try:
        delivery.events = await transform(webhook, settings, delivery)
    except InvalidInput as exc:  # TransformFailed, PayloadTooLarge, a body that is not JSON/UTF-8
        await store.record_delivery(
            conn,
            webhook["id"],
            outcome="failed",
            status_code=exc.status,
            error=exc.message,
            method=delivery.method,
            content_type=delivery.content_type,
            headers=deliveries.kept_headers(delivery.headers),
            query=delivery.query,
            body=delivery.body,
            body_bytes=len(delivery.body),
        )
        raise
    delivery.delivery_id, delivery.queued = await store.accept_delivery(
        conn,
        webhook["id"],
        delivery.events,
        method=delivery.method,
        content_type=delivery.content_type,
        headers=deliveries.kept_headers(delivery.headers),
        query=delivery.query,
        body_bytes=len(delivery.body),
    )
    return delivery


async def redeliver(conn: Conn, settings: Settings, webhook_id: str, delivery_id: str) -> Delivery:
    """Run a failed delivery's kept request through the webhook's current transform. Accepted: its
    events are stored, a new accepted delivery points back at it and it becomes `redelivered`.
    Failed again: the same 4xx, and its error is updated. The signature is not checked again (it
    held when the request arrived; a timestamp scheme would refuse it by now)."""
    webhook = await store.get(conn, webhook_id)
    if webhook is None:
        raise NotFound(f"webhook {webhook_id} not found")
    async with conn.transaction():
        kept = await store.lock_delivery(conn, webhook_id, delivery_id)
        if kept is None:
            raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} not found")
        if kept["outcome"] != "failed" or kept["body"] is None:
            raise InvalidInput(
                f"delivery {delivery_id} is {kept['outcome']}: only a failed delivery"
                " (whose request was kept)"
                " can be re-delivered"
            )
        delivery = Delivery(
            body=bytes(kept["body"]),
            content_type=kept["content_type"],
            headers=kept["headers"],
            query=kept["query"],
            method=kept["method"],
        )
        try:
            delivery.events = await transform(webhook, settings, delivery)
        except InvalidInput as exc:
            await store.set_delivery_error(conn, delivery_id, exc.message, exc.status)
            failed = exc
        else:
            failed = None
            delivery.delivery_id, delivery.queued = await store.accept_delivery(
                conn,
                webhook_id,
                delivery.events,
                method=delivery.method,
                content_type=delivery.content_type,
                headers=kept["headers"],
                query=kept["query"],
                body_bytes=kept["body_bytes"],
                redelivery_of=delivery_id,
            )
    if failed is not None:
        raise failed
    return delivery


def too_large(limit: int, declared: int | None) -> PayloadTooLarge:
    size = f"{declared} bytes" if declared is not None else "over the limit"
    return PayloadTooLarge(
        f"the delivery's body is {size}; a webhook takes at most {limit} bytes (PGQUEUE_MAX_EVENT_BYTES x 4)"
    )
