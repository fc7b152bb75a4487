"""Property: whatever a step output or return value holds (NaN, Infinity, lone surrogates, NUL,
huge numbers, deep nesting), storing the app's answer never fails the engine: the step is stored or
fails as UnstorableOutput, the return value completes or fails the run, and no item is left leased
to go round again. The answer goes through the real parser and executor into a real database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue.db.pool import open_pool
from pgqueue.executor.execute import Executor
from pgqueue.protocol import outcome
from pgqueue.store import queue
from tests.sql.test_flow_control import _function, _runs

nasty_text = st.text(alphabet=st.sampled_from(["a", "é", "😀", "\x00", "\ud83d", "\udc00", "\\", '"']), max_size=8)
scalars = st.one_of(
    st.none(), st.booleans(), nasty_text,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)), max_leaves=12)


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def _store_all(database_url: str, outputs: list[Any]) -> list[tuple[str, Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue.queue_items")  # what earlier examples queued next
        fn = _function(conn, f"prop-{len(outputs)}-{datetime.now(UTC).timestamp()}")
        run_ids = _runs(conn, fn, len(outputs), max_attempts=3)
    pool = await open_pool(database_url, max_size=4)
    async with httpx.AsyncClient() as client:
        executor = Executor(pool, client, signing_key=None, backoff_scale=0)
        try:
            async with pool.connection() as conn:
                items = await queue.claim(conn, "prop", len(outputs), 30_000)
            assert len(items) == len(outputs)
            by_run = {item.run_id: item for item in items}
            for i, (run_id, value) in enumerate(zip(run_ids, outputs, strict=True)):
                # Serialised as the SDKs do (Python's json.dumps writes NaN); even items a step
                # output, odd ones the return value.
                if i % 2 == 0:
                    body = json.dumps([{"op": "StepRun", "id": "s1", "name": "s1", "data": value}])
                    status = 206
                else:
                    body, status = json.dumps(value), 200
                response = outcome.Response(status, {"x-inngest-req-version": "2"},
                                            body.encode("utf-8", "backslashreplace"))
                await executor.record(by_run[run_id], outcome.parse(response), started_at=datetime.now(UTC),
                                      body_size=len(body))
        finally:
            await pool.close()
    results = []
    with psycopg.connect(database_url) as conn:
        for i, run_id in enumerate(run_ids):
            leased = conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE run_id = %s AND state = 'leased'",
                                  (run_id,)).fetchone()
            assert leased == (0,), f"output {i} left its item leased"
            if i % 2 == 0:
                row = conn.execute("SELECT op, memo FROM pgqueue.steps WHERE run_id = %s AND step_id = 's1'",
                                   (run_id,)).fetchone()
            else:
                row = conn.execute("SELECT status::text, error FROM pgqueue.runs WHERE id = %s", (run_id,)).fetchone()
            assert row is not None
            results.append(row)
    return results


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=20, max_size=20))
def test_any_output_is_stored_or_fails_cleanly(database_url: str, outputs: list[Any]) -> None:
    outputs = [*outputs, deep(600), deep(600), float("nan"), float("-inf"), "caf\ud83d", 10**400]
    results = asyncio.run(_store_all(database_url, outputs))
    for i, (first, second) in enumerate(results):
        if i % 2 == 0:
            assert first in ("StepRun", "StepFailed"), (outputs[i], first)
            if first == "StepFailed":
                assert second["error"]["name"] in ("UnstorableOutput", "OutputTooLarge"), second
        else:
            assert first in ("completed", "failed"), (outputs[i], first)
            if first == "failed":
                assert second["name"] in ("UnstorableOutput", "InvalidResponse"), second
