"""pgqueue.complete_v2, the executor's group commit: for the outcomes it owns it must leave exactly
the rows the general Applier leaves (checked side by side on twin runs), keep the fencing, hand
back what it does not own, write a whole burst of calls in one transaction, and let a run continue
on its call's lease only when that call was the run's only work."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from pgqueue.db.pool import open_pool
from pgqueue.executor import completion
from pgqueue.executor.apply import MAX_STEPS, Applier
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op, Ops, Outcome, RunDone
from tests.sql.conftest import Twin

STARTED = datetime.now(UTC)
STEP = Ops(ops=(Op(op="StepRun", id="s1", name="charge", display_name="charge card", data={"paid": 42}),),
           request_version=1, no_retry=False, retry_after_s=None)
STEP_WRAPPED = Ops(ops=(Op(op="Step", id="s2", name="s2", data={"data": [1, "two", None]}),),
                   request_version=None, no_retry=False, retry_after_s=None)
RUN_COMPLETE = Ops(ops=(Op(op="RunComplete", id="done", data={"total": 3}),), request_version=2,
                   no_retry=False, retry_after_s=None)


async def general(twin: Twin, item: QueueItem, outcome: Outcome) -> None:
    async with twin.pool.connection() as conn:
        await Applier().apply(conn, item, outcome, started_at=STARTED)


async def batched(twin: Twin, item: QueueItem, outcome: Outcome) -> str:
    status, context = await submit(twin, item, outcome)
    assert context is None, "only an element that may continue gets the next context"
    return status


async def submit(twin: Twin, item: QueueItem, outcome: Outcome) -> completion.Completed:
    elem = completion.element(item, outcome, started_at=STARTED, body_size=100)
    assert elem is not None, "this outcome belongs to the group commit"
    return await completion.CompletionBatcher(twin.pool).submit(elem)


def may_continue(item: QueueItem) -> QueueItem:
    return dataclasses.replace(item, may_continue=True)


@pytest.mark.parametrize("outcome", [STEP, STEP_WRAPPED, RUN_COMPLETE,
                                     RunDone(output={"ok": True}, request_version=1),
                                     RunDone(output=None, request_version=None)],
                         ids=["step", "step-wrapped", "run-complete", "return-value", "return-none"])
@pytest.mark.parametrize("heard", [True, False], ids=["listened", "unheard"])
async def test_leaves_the_same_rows_as_the_general_applier(twin: Twin, outcome: Outcome, heard: bool) -> None:
    """`heard`: something waits for inngest/function.finished (here: a pause was once created for
    the name); without a listener neither path writes the event."""
    if heard:
        async with twin.pool.connection() as conn:
            await conn.execute("INSERT INTO pgqueue.pause_paths (event_name, match_path)"
                               " VALUES ('inngest/function.finished', 'data.correlation_id')")
    [a] = await twin.run()
    [b] = await twin.run()
    await general(twin, a, outcome)
    result = await batched(twin, b, outcome)
    assert result in ("applied", "finished")
    left, right = await twin.state(a.run_id), await twin.state(b.run_id)
    assert right == left
    if isinstance(outcome, RunDone) or outcome is RUN_COMPLETE:
        assert right["run"]["status"] == "completed" and right["items"] == []
        if heard:
            assert [e["name"] for e in right["events"]] == ["inngest/function.finished"]
            assert right["events"][0]["queued"] is True
        else:
            assert right["events"] == []
    else:
        assert [i["step_id"] for i in right["items"]] == ["step"], "the next discovery call is queued"


async def test_a_sibling_item_holds_the_next_call_back(twin: Twin) -> None:
    a, b = await twin.run(items=("p1", "p2"))
    ops = [Ops(ops=(Op(op="StepRun", id=i.step_id, data=i.step_id),), request_version=1, no_retry=False,
               retry_after_s=None) for i in (a, b)]
    assert await batched(twin, a, ops[0]) == "applied"
    assert [i["step_id"] for i in (await twin.state(a.run_id))["items"]] == ["p2"]
    assert await batched(twin, b, ops[1]) == "applied"
    assert [i["step_id"] for i in (await twin.state(a.run_id))["items"]] == ["step"]


async def test_a_race_step_queues_the_next_call_while_its_sibling_runs(twin: Twin) -> None:
    """An item of a parallelMode "race" step (planned with the flag) continues the run at once, as
    the general path does: the group commit and the Applier leave the same rows."""
    left_items, right_items = await twin.run(items=("p1", "p2")), await twin.run(items=("p1", "p2"))
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.queue_items SET race = true WHERE id = ANY(%s)",
                           ([i.id for i in (*left_items, *right_items)],))
    ops = Ops(ops=(Op(op="StepRun", id="p1", data="first"),), request_version=1, no_retry=False,
              retry_after_s=None)
    await general(twin, left_items[0], ops)
    assert await batched(twin, right_items[0], ops) == "applied"
    left, right = await twin.state(left_items[0].run_id), await twin.state(right_items[0].run_id)
    assert right == left
    assert sorted(i["step_id"] for i in right["items"]) == ["p2", "step"]


async def test_a_lost_lease_changes_nothing(twin: Twin) -> None:
    [item] = await twin.run()
    before = await twin.state(item.run_id)
    stale = QueueItem(**{**{f: getattr(item, f) for f in item.__slots__}, "lease_token": uuid.uuid4()})
    assert await batched(twin, stale, STEP) == "lost"
    assert await twin.state(item.run_id) == before


async def test_an_ended_run_drops_the_item_and_records_the_attempt(twin: Twin) -> None:
    [item] = await twin.run(status="cancelled")
    assert await batched(twin, item, STEP) == "discarded"
    state = await twin.state(item.run_id)
    assert state["items"] == [] and state["steps"] == []
    assert [a["outcome"] for a in state["attempts"]] == ["discarded"]


async def test_hands_back_a_stored_step_and_a_full_run(twin: Twin) -> None:
    [item] = await twin.run()
    async with twin.pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, op, memo)"
                           " VALUES (%s, 's1', 'StepRun', '{}')",
                           (item.run_id,))
    before = await twin.state(item.run_id)
    assert await batched(twin, item, STEP) == "fallback"
    assert await twin.state(item.run_id) == before

    [full] = await twin.run(steps=MAX_STEPS)
    before = await twin.state(full.run_id)
    assert await batched(twin, full, STEP) == "fallback"
    assert await twin.state(full.run_id) == before


def test_outcomes_it_does_not_own_go_to_the_general_path() -> None:
    item = QueueItem(id=1, run_id="r", function_id=uuid.uuid4(), kind="call", step_id="step", step_name=None,
                     attempt=0, max_attempts=3, lease_token=uuid.uuid4(), run_at=STARTED)
    two = Ops(ops=(STEP.ops[0], STEP_WRAPPED.ops[0]), request_version=1, no_retry=False, retry_after_s=None)
    sleep = Ops(ops=(Op(op="Sleep", id="z", opts={"duration": "1s"}),), request_version=1, no_retry=False,
                retry_after_s=None)
    nul = Ops(ops=(Op(op="StepRun", id="n", data="a\x00b"),), request_version=1, no_retry=False,
              retry_after_s=None)
    for outcome in (two, sleep, nul, RunDone(output={"x": "\x00"}, request_version=1)):
        assert completion.element(item, outcome, started_at=STARTED, body_size=10) is None
    huge = completion.element(item, STEP, started_at=STARTED, body_size=5 * 1024 * 1024)
    assert huge is None, "an answer over the output limit is measured by the general path"


async def test_a_burst_of_calls_is_one_transaction(twin: Twin) -> None:
    items = [i for _ in range(40) for i in await twin.run()]
    batcher = completion.CompletionBatcher(twin.pool)
    elems = [completion.element(i, STEP, started_at=STARTED, body_size=100) for i in items]
    results = await asyncio.gather(*(batcher.submit(e) for e in elems if e is not None))
    assert results == [("applied", None)] * 40
    assert batcher.batches_written <= 2
    for item in items[:3]:
        assert [s["step_id"] for s in (await twin.state(item.run_id))["steps"]] == ["s1"]


async def test_a_run_continues_on_its_calls_lease(twin: Twin) -> None:
    """The discovery call was the run's only work: the run's next call is made on the same lease,
    with the context the claim would have read; nothing is queued, the step is stored."""
    [item] = await twin.run()
    status, context = await submit(twin, may_continue(item), STEP)
    assert status == "continued"
    assert context is not None and context["steps"] == [["s1", {"data": {"paid": 42}}]]
    state = await twin.state(item.run_id)
    assert [s["step_id"] for s in state["steps"]] == ["s1"]
    assert [(i["step_id"], i["state"], i["attempt"]) for i in state["items"]] == [("step", "leased", 0)]
    async with twin.pool.connection() as conn:
        row = await (await conn.execute("SELECT id, lease_token FROM pgqueue.queue_items WHERE run_id = %s",
                                        (item.run_id,))).fetchone()
        calls = await (await conn.execute("SELECT item_id FROM pgqueue.calls WHERE run_id = %s",
                                          (item.run_id,))).fetchall()
    assert (row["id"], row["lease_token"]) == (item.id, item.lease_token), "the same item, still leased"
    assert calls == [{"item_id": None}], "a continued call has no item of its own in the history"

    # The next call on that lease ends the run: the same rows as a run whose calls went through the queue.
    done = RunDone(output={"ok": True}, request_version=1)
    status, context = await submit(twin, item.continued(context), done)
    assert (status, context) == ("finished", None)
    assert (await twin.state(item.run_id))["run"]["status"] == "completed"


@pytest.mark.parametrize("why", ["retry", "sibling", "paused", "not-asked"])
async def test_a_run_goes_back_to_the_queue_when_it_may_not_continue(twin: Twin, why: str) -> None:
    """A retried call, a run with other pending work, a paused function, a worker that did not ask
    (stopping, or past its budget): the next call is queued, as without continuation."""
    items = await twin.run(items=("p1", "step") if why == "sibling" else ("step",))
    item = next(i for i in items if i.step_id == "step")
    async with twin.pool.connection() as conn:
        if why == "retry":
            await conn.execute("UPDATE pgqueue.queue_items SET attempt = 1 WHERE id = %s", (item.id,))
            item = dataclasses.replace(item, attempt=1)
        if why == "paused":
            await conn.execute("UPDATE pgqueue.functions SET paused_at = now() WHERE id = %s", (twin.fn,))
    if why != "not-asked":
        item = may_continue(item)
    status, context = await submit(twin, item, STEP)
    assert (status, context) == ("applied", None)
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.functions SET paused_at = NULL WHERE id = %s", (twin.fn,))
    left = [(i["step_id"], i["state"]) for i in (await twin.state(item.run_id))["items"]]
    expected = [("p1", "leased")] if why == "sibling" else [("step", "available")]
    assert left == expected


async def _finish_heard_calls(
    twin: Twin, database_url: str, outcome: Outcome, runs: int
) -> tuple[int, int, list[str]]:
    """Complete one call of each of `runs` runs with `outcome` in a burst on a pool of its own whose
    backends PostgreSQL tracks: (finish_heard_v1 calls, batches written, statuses)."""
    items = [i for _ in range(runs) for i in await twin.run()]
    conninfo = psycopg.conninfo.make_conninfo(database_url, options="-c track_functions=all")
    pool = await open_pool(conninfo, max_size=2)
    try:
        batcher = completion.CompletionBatcher(pool)
        elems = [completion.element(i, outcome, started_at=STARTED, body_size=100) for i in items]
        results = await asyncio.gather(*(batcher.submit(e) for e in elems if e is not None))
    finally:
        await pool.close()  # a backend reports its function counts when it exits

    async def calls(function: str) -> int:
        async with twin.pool.connection() as conn:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            row = await (await conn.execute(
                "SELECT coalesce(sum(calls), 0) AS calls FROM pg_stat_user_functions"
                " WHERE schemaname = 'pgqueue' AND funcname = %s", (function,))).fetchone()
        return int(row["calls"])

    for _ in range(50):  # the exiting backends' reports arrive within moments
        if await calls("complete_v2") >= batcher.batches_written:
            break
        await asyncio.sleep(0.1)
    return await calls("finish_heard_v1"), batcher.batches_written, [status for status, _ in results]


async def test_a_burst_of_ending_runs_asks_who_listens_once_per_batch(twin: Twin, database_url: str) -> None:
    """Whether anything listens for inngest/function.finished is one question per group commit, not
    one per run: asked per run it read the triggers of every function again for each (the drain of
    200 functions' runs spent half its time there); and no question when no run ends. Counted by
    PostgreSQL, which tracks the calls of the batcher's own backends (counts are per database, so
    the steps' burst is counted first)."""
    heard, _, statuses = await _finish_heard_calls(twin, database_url, STEP, 20)
    assert statuses == ["applied"] * 20
    assert heard == 0, "no run ended: nobody is asked"
    ended = RunDone(output=None, request_version=None)
    heard, batches, statuses = await _finish_heard_calls(twin, database_url, ended, 40)
    assert statuses == ["finished"] * 40
    assert heard == batches, "once per batch"
