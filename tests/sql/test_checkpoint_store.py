"""pgqueue.checkpoint_store_v1 through pgqueue/executor/checkpoint.store: the steps a running call
reports are stored in one statement only for the call holding its item's lease (every refusal
stores nothing), first stored output wins, and a checkpoint that takes the run over a limit fails
the run. The end-to-end behaviour with the JS SDK is in tests/compat/test_js_checkpoint.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from pgqueue.errors import InvalidInput, NotFound
from pgqueue.executor import checkpoint
from pgqueue.executor.apply import MAX_STEPS
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op
from tests.sql.conftest import Twin


def cp(item: QueueItem, *step_ids: str, token: uuid.UUID | None = None, fn_id: str | None = None,
       run_id: str | None = None) -> checkpoint.Checkpoint:
    ops = tuple(Op(op="StepRun", id=s, name=s, data={"out": s}) for s in step_ids)
    return checkpoint.Checkpoint(run_id or item.run_id, fn_id, item.id, token or item.lease_token, ops, 100)


async def store(twin: Twin, c: checkpoint.Checkpoint) -> checkpoint.Stored:
    async with twin.pool.connection() as conn:
        return await checkpoint.store(conn, c, received_at=datetime.now(UTC))


async def stored_steps(twin: Twin, run_id: str) -> list[tuple[str, object]]:
    async with twin.pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT step_id, memo FROM pgqueue.steps WHERE run_id = %s ORDER BY seq", (run_id,))).fetchall()
        return [(r["step_id"], r["memo"]) for r in rows]


async def test_the_lease_holder_stores_once_and_the_run_totals_move(twin: Twin) -> None:
    [item] = await twin.run()
    first = await store(twin, cp(item, "a", "b", fn_id=str(item.function_id)))
    again = await store(twin, cp(item, "b", "c"))
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (2, 0, 1, 1)
    assert await stored_steps(twin, item.run_id) == [
        ("a", {"data": {"out": "a"}}), ("b", {"data": {"out": "b"}}), ("c", {"data": {"out": "c"}})]
    state = await twin.state(item.run_id)
    assert state["run"]["step_count"] == 3 and state["run"]["state_bytes"] > 0
    assert state["run"]["status"] == "running" and state["items"]  # nothing queued, completed or ended


async def test_every_refusal_stores_nothing(twin: Twin) -> None:
    [item] = await twin.run()
    [other] = await twin.run()
    [ended] = await twin.run(status="completed")
    refusals = [
        (cp(item, "x", token=uuid.uuid4()), checkpoint.Stale, "no longer holds"),
        (cp(ended, "x"), checkpoint.Stale, "has ended"),
        (cp(other, "x", run_id=item.run_id), InvalidInput, "another run"),
        (cp(item, "x", fn_id=str(uuid.uuid4())), InvalidInput, "fn_id"),
        (cp(item, "x", run_id="no-such-run"), NotFound, "not found"),
    ]
    for c, error, message in refusals:
        with pytest.raises(error, match=message):
            await store(twin, c)
    for run_id in (item.run_id, other.run_id, ended.run_id):
        assert await stored_steps(twin, run_id) == []


async def test_a_checkpoint_over_the_step_limit_fails_the_run(twin: Twin) -> None:
    [item] = await twin.run(steps=MAX_STEPS)
    result = await store(twin, cp(item, "one-too-many"))
    assert result.failed is not None and result.failed["name"] == "StepLimitExceeded"
    state = await twin.state(item.run_id)
    assert state["run"]["status"] == "failed" and state["run"]["error"]["name"] == "StepLimitExceeded"
    assert [a["outcome"] for a in state["attempts"]] == ["failed"]
    with pytest.raises(checkpoint.Stale, match="has ended"):  # the call's next checkpoint
        await store(twin, cp(item, "later"))
