"""Durable endpoints: a route of the app runs as a durable function inside its own HTTP request (the
JS SDK 4.x `inngest.endpoint(handler)`).

The SDK creates the run with `POST /v1/checkpoint` when the handler's first step ends (or it
returns) and reports each later step with `POST /v1/checkpoint/{runId}/steps`. The run's first
call item is leased to that request (pgqueue.endpoint_run_start_v1), and the answer's `fn_id`
carries that lease (`<function id>.<item id>.<lease token>`, `request_ref`): the SDK sends it back
with every later checkpoint, which is stored only with it, as a call's `ctx.qi_id` fences `/async`
(the signing key alone, which every app holds, does not let one app write another's run). Step
outputs are stored under the lease like a checkpointing call's (pgqueue.checkpoint_store_v1), and
the rest (the return value
as RunComplete, a failed step, a sleep, a wait, parallel steps) is applied exactly as a call's
answer, which ends the run or hands it to the queue. From then on pgqueue calls the endpoint itself
(its URL and method, `X-Run-Id` and a signature header) and the SDK goes on from the stored steps.
If the request dies without a word, its lease expires and the rescuer queues the item: the run
continues the same way. The app need not be synced first: the app (named after the endpoint's
origin) and a function per route are created on the first run, as Inngest's server does.

While the run is in the queue, the SDK answers the user with a redirect to
`/v1/http/runs/{runId}/output?token=...`, which waits for the run's end and answers the endpoint's
own response. The token is an HMAC of the run id with the signing key (`output_token`). A client
that asked for a stream (`Accept: text/event-stream`) follows the SDK's `inngest.redirect_info` to
`/v1/realtime/sse` instead, with the run's realtime token (api/routes/checkpoint.py), and reads what
the endpoint tees from pgqueue's calls (pgqueue/realtime/publishing.py).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from pgqueue import ids, storable
from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.executor import checkpoint
from pgqueue.executor.apply import Applier, ApplyResult
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.store import durable_endpoints

# How long the endpoint's request holds its run after its last word (a new run or a checkpoint):
# if it says nothing for that long (the app died, the client hung up), the rescuer queues the run
# and pgqueue calls the endpoint to go on.
LEASE_S = 300
DEFAULT_RETRIES = 3  # the JS SDK's default, when the body does not say
MAX_RETRIES = 20  # pgqueue.functions.retries
EVENT_NAME = "inngest/http.request"
# Dev mode has no signing key: tokens are then keyed by this constant (dev mode is open anyway).
_DEV_TOKEN_KEY = "pgqueue-dev-endpoint-tokens"


@dataclass(frozen=True, slots=True)
class NewRun:
    run_id: str
    event_name: str
    event_data: dict[str, Any]
    event_ts: int
    origin: str  # the app: scheme://host[:port] of the endpoint
    route: str  # the function: the SDK's function id, else "<METHOD> <path>"
    url: str  # where pgqueue calls the endpoint: origin + path (+ query)
    method: str
    retries: int
    ops: tuple[Op, ...]
    body_size: int


def _json_object(raw: bytes, shape: str) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object like {shape}")
    return body


def _ops(raw_steps: object, body_size: int) -> tuple[Op, ...]:
    if raw_steps is None:
        return ()
    return checkpoint.parse_ops(raw_steps, body_size, outputs_only=False)


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidInput(f"event.data.{key} must be a{' non-empty' if required else ''} string")
    return value


def parse_new_run(raw: bytes, *, now_ms: int) -> NewRun:
    """The body of `POST /v1/checkpoint`: `{run_id, event: {name, data: {domain, method, path,
    query_params?, fn?, ...}, ts?}, steps?: [op, ...], retries?, request_version?, ts?}`."""
    body = _json_object(raw, '{"run_id": "<ULID>", "event": {"name": ..., "data": {"domain": ..., '
                             '"method": ..., "path": ...}}, "steps": [...]}')
    run_id = body.get("run_id")
    if not isinstance(run_id, str):
        raise InvalidInput("run_id must be a string: the run's ULID, made by the SDK")
    try:
        ids.ulid_time_ms(run_id)
    except ValueError as exc:
        raise InvalidInput(f"run_id is not a ULID: {exc}") from None
    event = body.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise InvalidInput("event must be an object with a data object (the endpoint's request)")
    data: dict[str, Any] = event["data"]
    name = event.get("name") or EVENT_NAME
    if not isinstance(name, str):
        raise InvalidInput("event.name must be a string")
    domain = _text(data, "domain").rstrip("/")
    parts = urlsplit(domain)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise InvalidInput(f"event.data.domain {domain!r} must be the endpoint's origin, like https://example.com")
    method = _text(data, "method").upper()
    if not method.isalpha() or len(method) > 16:
        raise InvalidInput(f"event.data.method {method!r} is not an HTTP method")
    path = _text(data, "path")
    if not path.startswith("/"):
        raise InvalidInput(f"event.data.path {path!r} must start with /")
    query = _text(data, "query_params", required=False)
    fn = _text(data, "fn", required=False)
    retries = body.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise InvalidInput(f"retries must be an integer from 0 to {MAX_RETRIES}, got {retries!r}")
    ts = event.get("ts")
    event_ts = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts > 0 else now_ms
    route = fn or f"{method} {path}"
    problem = storable.problem([route, name, data])
    if problem:
        raise InvalidInput(f"the endpoint's request cannot be stored: {problem}")
    url = f"{domain}{path}" + (f"?{query}" if query else "")
    return NewRun(run_id, name, data, event_ts, domain, route, url, method, retries,
                  _ops(body.get("steps"), len(raw)), len(raw))


@dataclass(frozen=True, slots=True)
class Steps:
    """`POST /v1/checkpoint/{runId}/steps`: the ops, and the `fn_id` that names the lease the
    request holds (`request_ref`; checked by `record` once the run is known)."""

    ops: tuple[Op, ...]
    body_size: int
    fn_id: object


def request_ref(function_id: object, item_id: int, lease_token: UUID) -> str:
    """`fn_id` of `POST /v1/checkpoint`'s answer: the function, and the lease of the run's item the
    endpoint's request holds, which the SDK sends back with each later checkpoint."""
    return f"{function_id}{checkpoint.REF_SEPARATOR}{item_id}{checkpoint.REF_SEPARATOR}{lease_token}"


def parse_steps(run_id: str, raw: bytes) -> Steps:
    """The body of `POST /v1/checkpoint/{runId}/steps`: `{run_id, fn_id, app_id, steps: [op, ...], ts}`,
    fn_id as `POST /v1/checkpoint` answered it (`request_ref`)."""
    body = _json_object(raw, '{"run_id": ..., "fn_id": ..., "app_id": ..., "steps": [...]}')
    if body.get("run_id") not in (None, run_id):
        raise InvalidInput(f"run_id {body.get('run_id')!r} in the body is not the run {run_id!r} of the path")
    if "steps" not in body:
        raise InvalidInput("steps is missing: a list of step opcodes")
    return Steps(_ops(body["steps"], len(raw)), len(raw), body.get("fn_id"))


def _lease_of(run_id: str, fn_id: object) -> tuple[int, UUID]:
    _, sep, ref = fn_id.partition(checkpoint.REF_SEPARATOR) if isinstance(fn_id, str) else ("", "", "")
    if not sep:
        raise InvalidInput(f"fn_id {fn_id!r} is not the one POST /v1/checkpoint answered for run {run_id}: "
                           "only the request that holds a durable endpoint's run may store its steps")
    return checkpoint.parse_queue_item_ref(ref)


@dataclass(frozen=True, slots=True)
class Started:
    run_id: str
    app_id: str
    function_id: str
    ref: str  # fn_id of the answer: request_ref


async def start(conn: Conn, applier: Applier, new: NewRun, *, received_at: datetime) -> Started:
    """Create the run and apply the steps the request sent with it. InvalidInput (409 Conflict
    from the route) when the run exists already."""
    event_id = ids.new_ulid()
    row = await durable_endpoints.start_run(
        conn, app_name=new.origin, app_url=new.origin, fn_slug=f"{new.origin} {new.route}", fn_name=new.route,
        retries=new.retries, run_id=new.run_id, event_id=event_id, event_name=new.event_name,
        event_data=new.event_data, event_ts=new.event_ts, endpoint_url=new.url, endpoint_method=new.method,
        lease_until=received_at + timedelta(seconds=LEASE_S),
    )
    if row["verdict"] == "exists":
        raise checkpoint.Stale(f"run {new.run_id} exists already")
    ref = request_ref(row["function_id"], int(row["item_id"]), row["lease_token"])
    if new.ops:
        await record(conn, applier, new.run_id, Steps(new.ops, new.body_size, ref), received_at=received_at)
    return Started(new.run_id, str(row["app_id"]), str(row["function_id"]), ref)


async def record(
    conn: Conn, applier: Applier, run_id: str, steps: Steps, *, received_at: datetime
) -> ApplyResult | checkpoint.Stored:
    """Steps of a request that holds its run (the lease in `steps`): outputs are stored and the
    request goes on holding it; anything else is applied like a call's answer (the run ends or goes
    to the queue). NotFound, InvalidInput (not a durable endpoint's run) or Stale (409: the lease is
    not the one the request holds, the request no longer holds the run, or it ended)."""
    ops, body_size = steps.ops, steps.body_size
    row = await durable_endpoints.held_item(conn, run_id)
    if row is None:
        raise NotFound(f"run {run_id} not found")
    if not row["is_endpoint"]:
        raise InvalidInput(f"run {run_id} was not started by a durable endpoint (POST /v1/checkpoint)")
    if row["run_status"] not in checkpoint.LIVE:
        raise checkpoint.Stale(f"run {run_id} has ended ({row['run_status']}): the steps were not stored")
    if row["id"] is None:
        raise checkpoint.Stale(
            f"the endpoint's request no longer holds run {run_id} (it went on in pgqueue's queue, or the "
            f"request said nothing for {LEASE_S} s): the steps were not stored")
    item_id, lease_token = _lease_of(run_id, steps.fn_id)
    if row["id"] != item_id or not hmac.compare_digest(str(row["lease_token"]), str(lease_token)):
        raise checkpoint.Stale(
            f"fn_id does not name the lease that holds run {run_id} (it is the answer of POST /v1/checkpoint "
            "for that run, sent back as it is): the steps were not stored")
    # Fenced by the token given, not the one just read: a lease taken over in between refuses it.
    item = dataclasses.replace(QueueItem.from_row(row), lease_token=lease_token)
    lease_until = received_at + timedelta(seconds=LEASE_S)
    if all(op.op in checkpoint.CHECKPOINT_OPS for op in ops):
        cp = checkpoint.Checkpoint(run_id, None, item.id, item.lease_token, ops, body_size)
        stored = await checkpoint.store(conn, cp, received_at=received_at)
        await durable_endpoints.extend_lease(conn, item.id, item.lease_token, lease_until)
        return stored
    answer = Ops(ops, request_version=None, no_retry=False, retry_after_s=None)
    return await applier.apply(conn, item, answer, started_at=received_at, body_size=body_size)


def output_token(run_id: str, keys: tuple[str, ...]) -> str:
    """The token that lets whoever holds it read the run's result (the endpoint's redirect)."""
    key = keys[0] if keys else _DEV_TOKEN_KEY
    return hmac.new(key.encode(), f"pgqueue.endpoint.output:{run_id}".encode(), sha256).hexdigest()


def verify_output_token(run_id: str, token: str | None, keys: tuple[str, ...]) -> bool:
    """Constant time over every key (the current and the fallback signing key)."""
    given = (token or "").encode()
    ok = False
    for key in keys or (_DEV_TOKEN_KEY,):
        ok |= hmac.compare_digest(given, output_token(run_id, (key,)).encode())
    return ok and bool(token)
