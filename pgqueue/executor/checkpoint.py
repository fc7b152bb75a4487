"""Steps an SDK stores while its call is still open: checkpointing (the JS SDK 4.x).

A call that carries `ctx.fn_id` and `ctx.qi_id` lets the JS SDK run a function's steps back to
back in one request, reporting each finished step with `POST /v1/checkpoint/{runId}/async`.
Storing a checkpoint is an apply that does not end the call: it is fenced like every apply (the
queue item named by qi_id must still be leased with the token in it, and its run be live), each
output is stored as the step output of a 206 answer would be (first stored output wins, the same
size and run limits), and nothing is queued or completed, because the request is still running.
Its final answer (the return value, a sleep, a planned step, an error) continues the run through
the executor as usual. Every later call of the run gets the stored steps back in `steps`, so a
crash between checkpoints runs again only the steps that were not stored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueue import storable
from pgqueue.db.pool import Conn
from pgqueue.errors import Conflict, InvalidInput, NotFound
from pgqueue.executor.apply import limit_error, output_problem, step_memo
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op, parse_op
from pgqueue.runs import metadata, transitions
from pgqueue.store import run_metadata, runs, steps

log = logging.getLogger(__name__)

REF_SEPARATOR = "."
# What a call may store while it runs: the outputs of steps it ran. Anything else (a sleep, a
# wait, a DeferAdd) belongs in the call's answer; a checkpoint carrying one is refused with 400,
# and the SDK then sends its buffered steps in its answer instead.
CHECKPOINT_OPS = frozenset({"StepRun", "Step"})
LIVE = ("queued", "running")


class Stale(Conflict):
    """409: the call that sent the checkpoint no longer holds its queue item, or the run has ended.
    The JS SDK stops the function at once (StaleDispatchError): whoever holds the run now goes on."""


def queue_item_ref(item: QueueItem) -> str:
    """`ctx.qi_id` of a call: its queue item and lease token, so only the call holding the lease
    can store steps (a rescued or re-leased item has a new token)."""
    return f"{item.id}{REF_SEPARATOR}{item.lease_token}"


def parse_queue_item_ref(ref: object) -> tuple[int, UUID]:
    raw_id, sep, raw_token = ref.partition(REF_SEPARATOR) if isinstance(ref, str) else ("", "", "")
    try:
        if not sep:
            raise ValueError(ref)
        return int(raw_id), UUID(raw_token)
    except ValueError:
        raise InvalidInput(f"qi_id {ref!r} is not a queue item reference of this server "
                           "(`<item id>.<lease token>`, as sent in ctx.qi_id)") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    run_id: str
    fn_id: str | None
    item_id: int
    lease_token: UUID
    ops: tuple[Op, ...]
    body_size: int


def parse(run_id: str, raw: bytes) -> Checkpoint:
    """The body of `POST /v1/checkpoint/{runId}/async`: `{run_id, fn_id, qi_id, steps: [op, ...],
    request_id?, generation_id?, request_started_at?, ts?}`. Anything malformed is InvalidInput,
    which makes the SDK send its steps in its answer instead."""
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object like "
                           '{"run_id": ..., "fn_id": ..., "qi_id": ..., "steps": [...]}')
    if body.get("run_id") not in (None, run_id):
        raise InvalidInput(f"run_id {body.get('run_id')!r} in the body is not the run {run_id!r} of the path")
    fn_id = body.get("fn_id")
    if fn_id is not None and not isinstance(fn_id, str):
        raise InvalidInput("fn_id must be a string (ctx.fn_id of the call)")
    item_id, lease_token = parse_queue_item_ref(body.get("qi_id"))
    ops = parse_ops(body.get("steps"), len(raw), outputs_only=True)
    return Checkpoint(run_id, fn_id, item_id, lease_token, ops, len(raw))


def parse_ops(raw_steps: object, body_size: int, *, outputs_only: bool) -> tuple[Op, ...]:
    """The step opcodes of a checkpoint body (async, or a durable endpoint's), each one storable
    and each output within the step output limit; `outputs_only`: StepRun outputs only (the async
    mode: anything else belongs in the call's answer)."""
    if not isinstance(raw_steps, list):
        raise InvalidInput("steps must be a list of step opcodes")
    ops: list[Op] = []
    for index, raw_op in enumerate(raw_steps):
        op = parse_op(raw_op)
        if op is None or not op.id:
            raise InvalidInput(f"steps[{index}] is not a step opcode with an op and an id")
        if outputs_only and op.op not in CHECKPOINT_OPS:
            raise InvalidInput(f"steps[{index}]: a checkpoint stores only StepRun outputs, not {op.op}; "
                               "send it in the call's answer")
        problem = storable.problem([op.id, op.name, op.display_name, op.opts])
        if problem:
            raise InvalidInput(f"steps[{index}] ({op.label!r}) cannot be stored: {problem}")
        if op.op in CHECKPOINT_OPS:
            output_error = output_problem(step_memo(op)[1], body_size)
            if output_error:
                raise InvalidInput(f"steps[{index}] ({op.label!r}): {output_error['message']}")
        ops.append(op)
    return tuple(ops)


@dataclass(frozen=True, slots=True)
class Stored:
    stored: int  # steps stored by this checkpoint
    duplicates: int  # steps that were stored already (the checkpoint was sent again)
    failed: dict[str, Any] | None = None  # a run limit was reached: the run failed with this error


async def store(conn: Conn, cp: Checkpoint, *, received_at: datetime) -> Stored:
    """Store the checkpoint's steps, fenced by the call's lease, in one statement
    (pgqueue.checkpoint_store_v1), and the metadata they carry with them (pgqueue/runs/metadata.py,
    in the same transaction). Raises NotFound (no such run), Stale (the lease is gone or the run
    ended: nothing stored) or InvalidInput (metadata that cannot be stored too: the SDK then sends
    the steps in its answer, where such a step fails with a named error)."""
    memos = [{"step_id": op.id, "name": op.label, "memo": step_memo(op)[0]} for op in cp.ops]
    carrying = {op.id: metadata.from_op(op.metadata, step_id=op.id, attempt=0, label=op.label)
                for op in cp.ops if op.metadata is not None}
    if not carrying:
        row = await steps.checkpoint(conn, cp.run_id, item_id=cp.item_id, lease_token=cp.lease_token,
                                     fn_id=cp.fn_id, memos=memos)
        _check(cp, row)
    else:
        async with conn.transaction():
            await runs.lock(conn, cp.run_id)  # before reading which of its steps are stored
            before = await steps.stored_among(conn, cp.run_id, list(carrying))
            row = await steps.checkpoint(conn, cp.run_id, item_id=cp.item_id, lease_token=cp.lease_token,
                                         fn_id=cp.fn_id, memos=memos)
            _check(cp, row)
            fresh = [u.to_row() for step_id, updates in carrying.items() if step_id not in before
                     for u in updates]
            if fresh:  # a checkpoint sent again writes its metadata once, as its steps
                await run_metadata.put(conn, cp.run_id, fresh, max_run_bytes=metadata.MAX_RUN_BYTES)
    stored = int(row["stored"])
    error = limit_error(steps.Recorded(row["step_count"], row["state_bytes"])) if stored else None
    if error is not None:
        # Rare: the run is over a limit now. It fails in a second transaction, if still live (a
        # crash before it leaves the steps stored and the call's next apply checks the limits).
        async with conn.transaction():
            run = await runs.lock(conn, cp.run_id)
            if run is not None and run["status"] in LIVE:
                await steps.record_attempt(
                    conn, run_id=cp.run_id, item_id=cp.item_id, step_id=row["item_step_id"],
                    attempt=row["item_attempt"], outcome="failed", error=error, started_at=received_at,
                )
                await transitions.finish(conn, run, "failed", error=error)
                log.info("run %s failed at a checkpoint: %s", cp.run_id, error["message"])
    return Stored(stored, len(cp.ops) - stored, error)


def _check(cp: Checkpoint, row: dict[str, Any]) -> None:
    """Raise unless pgqueue.checkpoint_store_v1 stored the checkpoint (verdict 'ok')."""
    match row["verdict"]:
        case "missing":
            raise NotFound(f"run {cp.run_id} not found")
        case "ended":
            raise Stale(f"run {cp.run_id} has ended ({row['run_status']}): the checkpoint was not stored")
        case "stale":
            raise Stale(f"the call that sent this checkpoint no longer holds queue item {cp.item_id} of run "
                        f"{cp.run_id} (its lease expired or was taken over): the checkpoint was not stored")
        case "other_run":
            raise InvalidInput(f"queue item {cp.item_id} belongs to another run than {cp.run_id}")
        case "other_function":
            raise InvalidInput(f"fn_id {cp.fn_id!r} is not the function of queue item {cp.item_id}")
