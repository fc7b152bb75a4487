"""Kick the executor Lambda after the API accepted events, so new work starts within a second
instead of at the next scheduled tick.

Kicks are an optimisation only: the scheduled tick does everything a kick does, so a lost or
failed kick delays work by at most one schedule period. They are debounced in SQL (one row,
`UPDATE ... WHERE last_kick_at < now() - debounce`), so a burst of API invocations sends about one
asynchronous invoke per window. boto3 is imported lazily: it ships with the Lambda runtime and is
never a dependency of pgqueue.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue.settings import Settings
from pgqueue.store import executors as store

log = logging.getLogger(__name__)

KICK_PAYLOAD = {"action": "kick"}

Invoke = Callable[[str, bytes], Any]


def boto3_invoke() -> Invoke | None:
    """An asynchronous Lambda invoke through boto3, or None when boto3 is not importable."""
    try:
        import boto3  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return None
    client = None

    def invoke(function_name: str, payload: bytes) -> Any:
        nonlocal client
        if client is None:
            from pgqueue.serverless import aws

            client = aws.client("lambda")  # short timeouts, one retry: never hang a request
        return client.invoke(FunctionName=function_name, InvocationType="Event", Payload=payload)

    return invoke


class Kicker:
    def __init__(self, function_name: str, *, debounce_ms: int, invoke: Invoke | None) -> None:
        self.function_name = function_name
        self.debounce_ms = debounce_ms
        self.invoke = invoke
        self.sent = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Kicker | None:
        """None unless PGQUEUE_KICK_FUNCTION is set; a configured kicker without boto3 logs once."""
        if not settings.kick_function:
            return None
        invoke = boto3_invoke()
        if invoke is None:
            log.warning("PGQUEUE_KICK_FUNCTION is set but boto3 is not importable: kicks are off")
        return cls(settings.kick_function, debounce_ms=settings.kick_debounce_ms, invoke=invoke)

    async def maybe_kick(self, pool: AsyncConnectionPool) -> bool:
        """Kick unless another request did within the debounce window. Never raises."""
        if self.invoke is None:
            return False
        try:
            async with pool.connection() as conn:
                if not await store.claim_kick(conn, self.debounce_ms):
                    return False
            await asyncio.to_thread(self.invoke, self.function_name, json.dumps(KICK_PAYLOAD).encode())
        except Exception as exc:
            log.warning("kicking the executor %s failed (the schedule will pick the work up): %s",
                        self.function_name, exc)
            return False
        self.sent += 1
        return True
