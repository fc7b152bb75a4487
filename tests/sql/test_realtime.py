"""Realtime messages in SQL (sql/functions/realtime.sql, sql/queries/realtime.sql).

A message published from the application's own transaction exists and is announced (NOTIFY, ids
only) when it commits, never if it rolls back; publishes to one channel take their ids in commit
order (a later publisher waits for the earlier one's commit), other channels do not wait; the size
limit and bad names are refused naming the problem; a publish from a call is recognised when the
call's step is retried (and only then); what subscribers receive has the Inngest message shape;
the rescuer prunes what passed the retention.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

import pgqueue
from pgqueue.db.pool import open_pool
from pgqueue.db.sqldir import sql_dir
from pgqueue.queue.rescuer import Rescuer
from pgqueue.realtime import publishing
from pgqueue.store import realtime as store
from tests.sql.conftest import Twin


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, **kwargs)


def messages(conn: psycopg.Connection[Any], channel: str) -> list[dict[str, Any]]:
    return list(conn.execute("SELECT id, topic, kind, data, run_id FROM pgqueue.realtime_messages"
                             " WHERE channel = %s ORDER BY id", (channel,)).fetchall())


def test_a_publish_exists_and_is_announced_only_when_its_transaction_commits(database_url: str) -> None:
    with connect(database_url, autocommit=True) as listener, connect(database_url) as app:
        listener.execute("LISTEN pgqueue_realtime")
        with app.transaction(force_rollback=True):
            pgqueue.publish(app, "orders:42", "status", {"step": "never"})
        assert messages(listener, "orders:42") == []
        assert not list(listener.notifies(timeout=0.2, stop_after=1))
        with app.transaction():
            app.execute("CREATE TEMP TABLE orders (id int)")
            kept = pgqueue.publish(app, "orders:42", "status", {"step": "paid"}, run_id="01RUN")
            assert messages(listener, "orders:42") == []  # not visible before commit
            assert not list(listener.notifies(timeout=0.2, stop_after=1))  # nor announced
        [note] = list(listener.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload) == ("pgqueue_realtime", str(kept))
        assert messages(listener, "orders:42") == [
            {"id": kept, "topic": "status", "kind": "data", "data": {"step": "paid"}, "run_id": "01RUN"}]


def test_a_later_publisher_of_the_same_channel_waits_for_the_earlier_commit(database_url: str) -> None:
    with connect(database_url) as first, connect(database_url, autocommit=True) as other, \
            connect(database_url, autocommit=True) as watcher:
        first.execute("SELECT 1")
        first_pid = first.info.backend_pid
        early = pgqueue.publish(first, "room", "chat", {"n": 1})  # transaction still open
        # another channel does not wait
        elsewhere = pgqueue.publish(other, "hall", "chat", {"n": 0})
        done: dict[str, int] = {}

        def second() -> None:
            with connect(database_url, autocommit=True) as conn:
                done["id"] = pgqueue.publish(conn, "room", "chat", {"n": 2})

        thread = threading.Thread(target=second)
        thread.start()
        # the second publisher is blocked on the first one's channel lock, not finished
        for _ in range(200):
            waiting = watcher.execute(
                "SELECT count(*) AS n FROM pg_locks w JOIN pg_locks h ON h.locktype = 'advisory'"
                " AND h.objid = w.objid AND h.classid = w.classid AND h.granted"
                " WHERE w.locktype = 'advisory' AND NOT w.granted AND h.pid = %s", (first_pid,)).fetchone()
            if waiting["n"]:
                break
            thread.join(0.05)
        assert waiting["n"] == 1 and "id" not in done
        first.commit()
        thread.join(10)
    assert early < done["id"]
    assert elsewhere < done["id"]


def test_the_size_limit_and_bad_names_are_refused_naming_the_problem(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        too_big = r"the message is \d+ bytes; the limit is 524288"
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match=too_big):
            pgqueue.publish(conn, "c", "t", {"blob": "x" * 600_000})
        conn.execute("SET pgqueue.realtime_max_message_bytes = 100")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is 100 bytes"):
            pgqueue.publish(conn, "c", "t", {"blob": "x" * 200})
        assert pgqueue.publish(conn, "c", "t", {"small": 1}) > 0
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="channel"):
            pgqueue.publish(conn, "", "t", {})
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="topic"):
            pgqueue.publish(conn, "c", "", {})
        assert [m["data"] for m in messages(conn, "c")] == [{"small": 1}]


async def _publish(twin: Twin, run_id: str | None, data: Any, *, channel: str = "run-ch",
                   topic: str = "progress") -> tuple[int, bool]:
    async with twin.pool.connection() as conn:
        [row] = await store.publish(conn, channel=channel, topics=[topic], kind="data", datas=[data],
                                    run_id=run_id, stream_id=None, max_bytes=1 << 20, dedupe=True)
    return int(row["message_id"]), bool(row["duplicate"])


async def _new_lease(twin: Twin, run_id: str, step_id: str) -> None:
    """What a retry looks like to the publish: the same step called again under a new lease."""
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.queue_items SET lease_token = gen_random_uuid()"
                           " WHERE run_id = %s AND step_id = %s", (run_id, step_id))


async def test_a_retried_step_does_not_publish_twice(twin: Twin) -> None:
    [item] = await twin.run()
    run = item.run_id
    first = await _publish(twin, run, {"pct": 50})
    again = await _publish(twin, run, {"pct": 50})  # the same call publishes it twice: two messages
    other = await _publish(twin, run, {"pct": 60})
    assert [first[1], again[1], other[1]] == [False, False, False]
    assert len({first[0], again[0], other[0]}) == 3

    await _new_lease(twin, run, "step")  # the step failed after publishing: its retry publishes again
    assert await _publish(twin, run, {"pct": 50}) == (first[0], True)
    assert await _publish(twin, run, {"pct": 50}) == (again[0], True)
    assert await _publish(twin, run, {"pct": 60}) == (other[0], True)
    third, dup = await _publish(twin, run, {"pct": 50})  # one more than the first call made: new
    assert not dup and third not in (first[0], again[0])
    retried_with_new_data = await _publish(twin, run, {"pct": 70})
    assert not retried_with_new_data[1]

    await _new_lease(twin, run, "step")  # a second retry is recognised too (the message moved to it)
    assert await _publish(twin, run, {"pct": 50}) == (first[0], True)

    # the step ran inside a discovery call and is retried in a call of its own (its hashed id)
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.queue_items SET step_id = 'hashed-step',"
                           " lease_token = gen_random_uuid() WHERE run_id = %s AND step_id = 'step'", (run,))
    assert await _publish(twin, run, {"pct": 50}) == (first[0], True)

    # once the step is stored, the next step's identical publish is a new message
    async with twin.pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, op, memo) VALUES (%s, 'a', 'StepRun',"
                           " '{\"data\": 1}')", (run,))
    assert (await _publish(twin, run, {"pct": 50}))[1] is False
    async with twin.pool.connection() as conn:
        rows = await (await conn.execute("SELECT count(*) AS n FROM pgqueue.realtime_messages")).fetchone()
    assert rows["n"] == 6


async def _hand_over(twin: Twin, run_id: str, done: str, next_step: str) -> None:
    """The call of step `done` ends (its lease goes) and a call of `next_step` holds the only lease."""
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.queue_items SET state = 'available', lease_token = NULL,"
                           " lease_expires_at = NULL WHERE run_id = %s AND step_id = %s", (run_id, done))
        await conn.execute("UPDATE pgqueue.queue_items SET state = 'leased', lease_token = gen_random_uuid(),"
                           " lease_expires_at = now() + interval '1 minute'"
                           " WHERE run_id = %s AND step_id = %s", (run_id, next_step))


async def test_only_a_publish_that_can_be_tied_to_one_call_is_recognised(twin: Twin) -> None:
    parallel = await twin.run(items=("aaa", "bbb"))  # two calls of one run in flight
    run = parallel[0].run_id
    a = await _publish(twin, run, {"done": 1})
    b = await _publish(twin, run, {"done": 1})
    assert not a[1] and not b[1] and a[0] != b[0]
    # no run named: never recognised
    c = await _publish(twin, None, {"done": 1})
    d = await _publish(twin, None, {"done": 1})
    assert not c[1] and not d[1] and c[0] != d[0]
    # parallel steps run one at a time: another step's identical publish at the same point is its
    # own message; the first step's retry repeats the first one
    [a_item, _] = await twin.run(items=("s1", "s2"))
    run = a_item.run_id
    async with twin.pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.queue_items SET state = 'available', lease_token = NULL,"
                           " lease_expires_at = NULL WHERE run_id = %s AND step_id = 's2'", (run,))
    from_a = await _publish(twin, run, {"x": 1})  # s1 publishes, then fails
    await _hand_over(twin, run, "s1", "s2")
    from_b = await _publish(twin, run, {"x": 1})
    assert not from_b[1] and from_b[0] != from_a[0]
    await _hand_over(twin, run, "s2", "s1")  # s1's retry
    assert await _publish(twin, run, {"x": 1}) == (from_a[0], True)


async def test_subscribers_get_the_inngest_message_shape(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=2)
    try:
        async with pool.connection() as conn:
            a = await store.publish(conn, channel="c1", topics=["t"], kind="data", datas=[{"a": [1, None]}],
                                    run_id=None, stream_id=None, max_bytes=1000, dedupe=False)
            b = await store.publish(conn, channel="c1", topics=["t"], kind="data", datas=["text"],
                                    run_id="01RUN", stream_id=None, max_bytes=1000, dedupe=False)
            c = await store.publish(conn, channel="c1", topics=["$stream"], kind="raw",
                                    datas=["event: x\ndata: 1\n\n"], run_id="01RUN", stream_id=None,
                                    max_bytes=1000, dedupe=False)
            await store.publish(conn, channel="c2", topics=["t"], kind="chunk", datas=["abc"], run_id=None,
                                stream_id="s1", max_bytes=1000, dedupe=False)
            ids = [a[0]["message_id"], b[0]["message_id"], c[0]["message_id"]]
            rows = await store.fetch_ids(conn, ids, ["c1"])
            assert [r["id"] for r in rows] == ids
            first, second, raw = rows
            assert first["raw"] is None and raw["wire"] is None
            assert raw["raw"] == "event: x\ndata: 1\n\n"
            wire = json.loads(first["wire"])
            assert wire.pop("created_at").endswith("Z")
            # no keys with null values added (the JS SDK's schema refuses run_id: null)
            assert wire == {"kind": "data", "channel": "c1", "topic": "t", "data": {"a": [1, None]}}
            assert json.loads(second["wire"])["run_id"] == "01RUN"
            assert await store.fetch_ids(conn, ids, ["other"]) == []
            after = await store.fetch_after(conn, ["c1", "c2"], [ids[0], 0], limit=10)
            kinds = [(r["channel"], r["kind"]) for r in after]
            assert kinds == [("c1", "data"), ("c1", "raw"), ("c2", "chunk")]
            chunk = json.loads(after[-1]["wire"])
            assert chunk["kind"] == "chunk" and chunk["stream_id"] == "s1"
            assert (chunk["data"], chunk["channel"], chunk["topic"]) == ("abc", "c2", "t")
            assert len(await store.fetch_after(conn, ["c1"], [0], limit=2)) == 2
            assert await store.channel_head(conn, "c1") == ids[-1]
            assert await store.channel_head(conn, "nobody") == 0
    finally:
        await pool.close()


async def test_the_rescuer_prunes_messages_past_the_retention(database_url: str) -> None:
    with connect(database_url, autocommit=True) as conn:
        old = pgqueue.publish(conn, "c", "t", {"old": True})
        new = pgqueue.publish(conn, "c", "t", {"new": True})
        conn.execute("UPDATE pgqueue.realtime_messages SET created_at = now() - interval '11 minutes'"
                     " WHERE id = %s", (old,))
    pool = await open_pool(database_url, max_size=2)
    try:
        tick = await Rescuer(pool, realtime_retention_s=600).run_once()
    finally:
        await pool.close()
    assert tick.pruned >= 1
    with connect(database_url, autocommit=True) as conn:
        assert [m["id"] for m in messages(conn, "c")] == [new]


def test_the_sender_role_can_publish_and_read_nothing(database_url: str) -> None:
    role = f"pgqueue_sender_{uuid.uuid4().hex[:8]}"
    script = sql_dir() / "grants" / "sender.sql"
    subprocess.run(["psql", database_url, "-v", "ON_ERROR_STOP=1", "-v", f"sender={role}", "-q", "-f",
                    str(script)], check=True, capture_output=True)
    with connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    try:
        conninfo = psycopg.conninfo.make_conninfo(database_url, user=role, password="pw")
        with connect(conninfo, autocommit=True) as conn:
            assert pgqueue.publish(conn, "c", "t", {"from": "app"}) > 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pgqueue.realtime_messages")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pgqueue.realtime_publish_v1('c', ARRAY['t'], 'data',"
                             " ARRAY['{}'::jsonb], NULL, NULL, 10, false)")
    finally:
        with connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_python_helpers_publish_from_sync_and_async_connections(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await pgqueue.publish_async(conn, "h", "t", [1, 2])
    with connect(database_url, autocommit=True) as conn:
        second = pgqueue.publish(conn, "h", "t", "plain text")
        assert [m["data"] for m in messages(conn, "h")] == [[1, 2], "plain text"]
    assert first < second


async def test_a_batch_keeps_each_channel_s_order_and_answers_each_publish(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=4)
    try:
        async with pool.connection() as conn:
            items = [{"channel": f"c{n % 3}", "topics": ["t", "u"] if n == 4 else ["t"], "data": {"n": n}}
                     for n in range(9)]
            rows = await store.publish_many(conn, items, max_bytes=1000)
        by_item: dict[int, list[int]] = {}
        for row in rows:
            by_item.setdefault(row["item"], []).append(row["message_id"])
        assert sorted(by_item) == list(range(9)) and len(by_item[4]) == 2  # one message per topic
        with connect(database_url, autocommit=True) as conn:
            for channel in ("c0", "c1", "c2"):
                assert [m["data"]["n"] for m in messages(conn, channel) if m["topic"] == "t"] == [
                    n for n in range(9) if f"c{n % 3}" == channel]
    finally:
        await pool.close()


async def test_the_batcher_commits_concurrent_publishes_together(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=4)
    try:
        batcher = publishing.Batcher(pool, max_bytes=200)
        targets = [publishing.target("burst", ["t"], None) for _ in range(50)]
        results = await asyncio.gather(*(batcher.publish(to, {"n": n}) for n, to in enumerate(targets)))
        assert batcher.published == 50 and batcher.batches < 50  # they went in fewer transactions
        ids = [r.ids[0] for r in results]
        assert ids == sorted(ids)  # arrival order is id order within the channel
        # a publish PostgreSQL refuses fails alone; the rest of its batch is published
        mixed = await asyncio.gather(
            batcher.publish(publishing.target("burst", ["t"], None), {"ok": 1}),
            batcher.publish(publishing.target("burst", ["t"], None), {"big": "x" * 500}),
            batcher.publish(publishing.target("burst", ["t"], None), {"ok": 2}),
            return_exceptions=True)
        assert isinstance(mixed[1], psycopg.errors.ProgramLimitExceeded)
        assert all(isinstance(r, publishing.Published) for r in (mixed[0], mixed[2]))
    finally:
        await pool.close()
    with connect(database_url, autocommit=True) as conn:
        data = [m["data"] for m in messages(conn, "burst")]
    assert data[:50] == [{"n": n} for n in range(50)] and data[50:] == [{"ok": 1}, {"ok": 2}]
