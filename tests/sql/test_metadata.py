"""Run and step metadata against real PostgreSQL: how updates combine (pgqueue.run_metadata_combine_v1),
that an answer's and a checkpoint's metadata is stored with its step, once, and that metadata that
cannot be stored fails its step (or its run) with a named error instead of being dropped. The
end-to-end behaviour with the JS SDK is in tests/compat/test_js_wire.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from pgqueue.executor import checkpoint, completion
from pgqueue.executor.apply import Applier
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.runs import metadata
from pgqueue.store import queue
from tests.sql.conftest import Twin

STARTED = datetime.now(UTC)


def answer(*ops: Op) -> Ops:
    return Ops(ops=ops, request_version=2, no_retry=False, retry_after_s=None)


def md(kind: str, values: dict[str, Any], *, scope: str = "step", op: str = "set") -> dict[str, Any]:
    return {"kind": kind, "scope": scope, "op": op, "values": values}


async def apply(twin: Twin, item: QueueItem, outcome: Ops) -> None:
    async with twin.pool.connection() as conn:
        await Applier().apply(conn, item, outcome, started_at=STARTED)


async def rows(twin: Twin, run_id: str) -> list[dict[str, Any]]:
    async with twin.pool.connection() as conn:
        cur = await conn.execute("SELECT scope, step_id, attempt, kind, \"values\", size"
                                 " FROM pgqueue.run_metadata WHERE run_id = %s ORDER BY scope, step_id, kind",
                                 (run_id,))
        return list(await cur.fetchall())


@pytest.mark.parametrize(("old", "new", "op", "want"), [
    ({"a": 1, "b": 2}, {"c": 3}, "set", {"c": 3}),
    ({"a": 1, "b": 2}, {"b": 9, "c": 3}, "merge", {"a": 1, "b": 9, "c": 3}),
    ({"a": 1, "b": 2}, {"a": None}, "delete", {"b": 2}),
    ({"n": 2, "s": "x", "k": 1}, {"n": 3.5, "s": 4, "k": "text", "new": 7}, "add",
     {"n": 5.5, "s": 4, "k": 1, "new": 7}),  # Inngest's Values.Combine: no number stored -> take it
    (None, {"a": 1}, "merge", {"a": 1}),
])
async def test_updates_combine_by_their_op(twin: Twin, old: Any, new: Any, op: str, want: Any) -> None:
    async with twin.pool.connection() as conn:
        cur = await conn.execute("SELECT pgqueue.run_metadata_combine_v1(%s, %s, %s) AS v",
                                 (Jsonb(old) if old is not None else None, Jsonb(new), op))
        assert (await cur.fetchone())["v"] == want


async def test_an_answers_metadata_is_stored_with_its_step_once(twin: Twin) -> None:
    [a] = await twin.run()
    step = Op(op="StepRun", id="s1", name="work", data=1,
              metadata=[md("userland.default", {"inside": True}),
                        md("userland.count", {"n": 1}, scope="run", op="add"),
                        md("userland.try", {"t": 1}, scope="step_attempt")])
    await apply(twin, a, answer(step))
    stored = await rows(twin, a.run_id)
    assert [(r["scope"], r["step_id"], r["attempt"], r["kind"], r["values"]) for r in stored] == [
        ("run", "", -1, "userland.count", {"n": 1}),
        ("step", "s1", -1, "userland.default", {"inside": True}),
        ("step_attempt", "s1", 0, "userland.try", {"t": 1}),
    ]
    # The same step reported again (another call's answer): its metadata is not written again.
    async with twin.pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id,"
                           " max_attempts) VALUES (%s, %s, 'call', 'again', 3)", (a.run_id, a.function_id))
        claimed = await queue.claim(conn, "twin-worker", 10, 60_000)
        [again] = [i for i in claimed if i.run_id == a.run_id and i.step_id == "again"]
    await apply(twin, again, answer(step))
    [count] = [r for r in await rows(twin, a.run_id) if r["kind"] == "userland.count"]
    assert count["values"] == {"n": 1}


async def test_the_group_commit_leaves_metadata_to_the_general_path() -> None:
    item = QueueItem(id=1, run_id="r", function_id=uuid.uuid4(), kind="call", step_id="step",
                     step_name=None, attempt=0, max_attempts=3, lease_token=uuid.uuid4(), run_at=STARTED)
    with_metadata = answer(Op(op="StepRun", id="s", data=1, metadata=[md("userland.x", {"a": 1})]))
    assert completion.element(item, with_metadata, started_at=STARTED, body_size=10) is None
    assert completion.element(item, answer(Op(op="StepRun", id="s", data=1)), started_at=STARTED,
                              body_size=10) is not None


@pytest.mark.parametrize(("bad", "name"), [
    (md("userland.big", {"blob": "x" * (metadata.MAX_UPDATE_BYTES + 1)}), "MetadataTooLarge"),
    (md("inngest.secret", {"a": 1}), "InvalidMetadata"),
    ({"kind": "userland.x", "scope": "step", "op": "replace", "values": {}}, "InvalidMetadata"),
    ("not a list", "InvalidMetadata"),
])
async def test_metadata_that_cannot_be_stored_fails_its_step(twin: Twin, bad: Any, name: str) -> None:
    [a] = await twin.run()
    metadata_value = bad if isinstance(bad, str) else [md("userland.ok", {"kept": False}), bad]
    await apply(twin, a, answer(Op(op="StepRun", id="s1", name="work", data="out", metadata=metadata_value)))
    state = await twin.state(a.run_id)
    [step] = state["steps"]
    assert step["op"] == "StepFailed" and step["memo"]["error"]["name"] == name, step
    assert "the metadata of step 'work'" in step["memo"]["error"]["message"]
    assert await rows(twin, a.run_id) == []  # nothing of it is kept
    assert state["run"]["status"] == "running"  # the SDK gets the step's error at its next call


async def test_a_run_keeps_at_most_1_mb_of_metadata(twin: Twin) -> None:
    [a] = await twin.run()
    async with twin.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM pgqueue.runs WHERE id = %s FOR UPDATE", (a.run_id,))
        blob = "x" * 60_000
        for n in range(17):  # 17 x 60 KB: just under 1 MB
            await conn.execute("SELECT pgqueue.run_metadata_put_v1(%s, %s, %s)", (a.run_id, Jsonb([
                {"scope": "run", "step_id": "", "attempt": -1, "span_id": "", "kind": f"userland.k{n}",
                 "op": "set", "values": {"b": blob}}]), metadata.MAX_RUN_BYTES))
    await apply(twin, a, answer(Op(op="StepRun", id="s1", name="work", data=1,
                                   metadata=[md("userland.more", {"b": blob})])))
    [step] = (await twin.state(a.run_id))["steps"]
    assert step["memo"]["error"]["name"] == "MetadataTooLarge"
    assert "at most 1048576 bytes" in step["memo"]["error"]["message"]
    assert len(await rows(twin, a.run_id)) == 17
    # The API refuses the same with a 413 and keeps nothing.
    async with twin.pool.connection() as conn:
        with pytest.raises(metadata.MetadataTooLarge) as caught:
            await metadata.write(conn, a.run_id, metadata.from_request(
                {"metadata": [{"kind": "userland.more", "op": "set", "values": {"b": blob}}]}, a.run_id))
    assert caught.value.status == 413
    assert len(await rows(twin, a.run_id)) == 17


async def test_unstorable_metadata_on_an_op_that_is_no_step_result_fails_the_run(twin: Twin) -> None:
    [a] = await twin.run()
    await apply(twin, a, answer(Op(op="Sleep", id="nap", name="1s", metadata=[md("inngest.secret", {})])))
    state = await twin.state(a.run_id)
    assert state["run"]["status"] == "failed"
    assert state["run"]["error"]["name"] == "InvalidMetadata"
    assert state["items"] == []  # no sleep was scheduled


async def test_a_checkpoints_metadata_is_stored_with_its_steps_once(twin: Twin) -> None:
    [item] = await twin.run()
    ops = (Op(op="StepRun", id="a", name="a", data=1, metadata=[md("userland.n", {"n": 1}, op="add")]),
           Op(op="StepRun", id="b", name="b", data=2))
    cp = checkpoint.Checkpoint(item.run_id, None, item.id, item.lease_token, ops, 100)
    for _ in range(2):  # sent twice (the SDK retried): stored once
        async with twin.pool.connection() as conn:
            await checkpoint.store(conn, cp, received_at=STARTED)
    assert [(r["step_id"], r["values"]) for r in await rows(twin, item.run_id)] == [("a", {"n": 1})]
    # Metadata it cannot store: 4xx, and neither the steps nor the metadata are kept (the SDK then
    # sends them in its answer, where the step fails with the reason).
    big = (Op(op="StepRun", id="c", name="c", data=3,
              metadata=[md("userland.big", {"b": "x" * (metadata.MAX_UPDATE_BYTES + 1)})]),)
    async with twin.pool.connection() as conn:
        with pytest.raises(metadata.MetadataTooLarge):
            await checkpoint.store(conn, checkpoint.Checkpoint(item.run_id, None, item.id, item.lease_token,
                                                               big, 100), received_at=STARTED)
    assert [s["step_id"] for s in (await twin.state(item.run_id))["steps"]] == ["a", "b"]
