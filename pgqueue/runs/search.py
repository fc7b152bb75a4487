"""Search runs by a CEL expression over their triggering event and their output
(`event.data.userId == "u1"`, `output.total > 100`), and events by one over their payload, as
Inngest's dashboard does — without being able to hurt the database.

A search is bounded every way: the expression is compiled and cost-limited as triggers' are
(pgqueue/expressions), it reads one time window (at most `MAX_WINDOW`) of runs by their ids, a page
of candidates at a time, each page's statement under `statement_timeout`, and it stops at `limit`
matches, after `max_scanned` candidates, at its deadline, or when the caller says to (a client that
went away): what it did not reach is given back as a cursor to go on from. Equalities of the
expression on `event.data` (`event.data.userId == "u1"`) are handed to PostgreSQL as a containment
prefilter, so only candidates come back (PostgreSQL still reads the window: no index on event
data); the expression decides.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from pgqueue import expressions
from pgqueue.db.pool import Conn
from pgqueue.errors import ExpressionError, InvalidInput
from pgqueue.events.objects import event_object
from pgqueue.store import events, runs

MAX_WINDOW = timedelta(days=31)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PAGE = 1000  # candidates read per statement
MAX_LIMIT = 500
STATEMENT_TIMEOUT_MS = 3000
DEADLINE_S = 5.0
MAX_SCANNED = 200_000


@dataclass(frozen=True, slots=True)
class Search:
    """What a search found: `rows` (newest first), how many candidates it read, and, when it stopped
    before the end of its window, why and the cursor to go on from."""

    rows: list[dict[str, Any]]
    scanned: int
    elapsed_ms: float
    cursor: str | None = None
    stopped: str | None = None  # "limit", "deadline", "scanned", "cancelled", "timeout"
    errors: int = 0  # candidates the expression could not be evaluated on (they do not match)
    prefilter: dict[str, Any] | None = field(default=None)


def compile_query(source: str, variables: tuple[str, ...]) -> expressions.Program:
    try:
        return expressions.compile(source, variables)
    except ExpressionError as exc:
        raise InvalidInput(f"invalid search expression: {exc.message}") from None


def window(after: datetime | None, before: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The window a search reads: default the last 24 hours, never more than MAX_WINDOW."""
    before = before or now
    if before <= EPOCH:  # ids are ULIDs: nothing is older than 1970, and no window bound can be
        raise InvalidInput("the search window's end (`to`) must be after 1970-01-01 (nothing is older)")
    after = max(after or before - timedelta(days=1), EPOCH)
    if after >= before:
        raise InvalidInput("the search window's start must be earlier than its end")
    if before - after > MAX_WINDOW:
        raise InvalidInput(f"search at most {MAX_WINDOW.days} days at a time (narrow `from`/`to`)")
    return after, before


def prefilter(program: expressions.Program) -> dict[str, Any] | None:
    """A jsonb value every matching event's data contains, from `event.data.<path> == "<text>"`
    terms of the expression's top-level conjunction. Only strings that no loose comparison could
    equate with another JSON type (numbers, booleans, null) are used: the prefilter may only ever
    let through more than the expression, never less."""
    found: dict[str, Any] = {}
    for path, literal in program.equality_literals("event"):
        parts = path.split(".")
        if parts[0] != "data" or len(parts) < 2 or not isinstance(literal, str):
            continue
        if _looks_typed(literal):
            continue
        node = found
        for part in parts[1:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            node = nxt
        else:
            node.setdefault(parts[-1], literal)  # two values at one path: the expression decides
    return found or None


def _looks_typed(text: str) -> bool:
    if text.strip().lower() in ("true", "false", "null", ""):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


Cancelled = Callable[[], Awaitable[bool]]


async def _never() -> bool:
    return False


async def search_runs(
    conn: Conn, query: str, *, after: datetime, before: datetime, function_id: UUID | None = None,
    status: str | None = None, limit: int = 50, cursor: str | None = None, cancelled: Cancelled = _never,
    deadline_s: float = DEADLINE_S, max_scanned: int = MAX_SCANNED,
) -> Search:
    """Runs created in [after, before) whose `query` (over `event` and `output`) is true."""
    program = compile_query(query, expressions.SEARCH_VARIABLES)
    contains = prefilter(program)

    async def page(before_id: str | None, size: int) -> list[dict[str, Any]]:
        return await runs.search_page(conn, after=after, before=before, before_id=before_id,
                                      function_id=function_id, status=status, contains=contains, limit=size)

    def matches(row: dict[str, Any]) -> bool:
        event = _event_of(row)
        return expressions.truthy(program.evaluate({"event": event, "output": row["output"]}))

    return await _scan(conn, page, matches, limit=limit, cursor=cursor, cancelled=cancelled,
                       deadline_s=deadline_s, max_scanned=max_scanned, contains=contains)


async def search_events(
    conn: Conn, query: str, *, after: datetime, before: datetime, name: str | None = None, limit: int = 50,
    cursor: str | None = None, cancelled: Cancelled = _never, deadline_s: float = DEADLINE_S,
    max_scanned: int = MAX_SCANNED,
) -> Search:
    """Events received in [after, before) (of one name) whose `query` over `event` is true."""
    program = compile_query(query, ("event",))
    contains = prefilter(program)

    async def page(before_id: str | None, size: int) -> list[dict[str, Any]]:
        return await events.search_page(conn, after=after, before=before, before_id=before_id, name=name,
                                        contains=contains, limit=size)

    def matches(row: dict[str, Any]) -> bool:
        return expressions.truthy(program.evaluate({"event": event_object(row)}))

    return await _scan(conn, page, matches, limit=limit, cursor=cursor, cancelled=cancelled,
                       deadline_s=deadline_s, max_scanned=max_scanned, contains=contains)


def _event_of(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["event_name"] is None:
        return None  # removed by retention
    return event_object({"id": row["event_id"], "external_id": row["event_external_id"], "name": row["event_name"],
                         "data": row["event_data"], "user": row["event_user"], "ts": row["event_ts"],
                         "v": row["event_v"], "sessions": row["event_sessions"]})


async def _scan(
    conn: Conn,
    page: Callable[[str | None, int], Awaitable[list[dict[str, Any]]]],
    matches: Callable[[dict[str, Any]], bool],
    *, limit: int, cursor: str | None, cancelled: Cancelled, deadline_s: float, max_scanned: int,
    contains: dict[str, Any] | None,
) -> Search:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    started = time.monotonic()
    found: list[dict[str, Any]] = []
    scanned = errors = 0
    position = cursor

    def result(stopped: str | None, at: str | None) -> Search:
        return Search(found, scanned, (time.monotonic() - started) * 1000, at, stopped, errors, contains)

    while True:
        if await cancelled():
            return result("cancelled", position)
        if time.monotonic() - started > deadline_s:
            return result("deadline", position)
        if scanned >= max_scanned:
            return result("scanned", position)
        size = min(PAGE, max_scanned - scanned)
        try:
            async with conn.transaction():
                await runs.search_timeout(conn, STATEMENT_TIMEOUT_MS)
                rows = await page(position, size)
        except psycopg.errors.QueryCanceled:
            return result("timeout", position)
        for row in rows:
            scanned += 1
            position = row["id"]
            try:
                hit = matches(row)
            except ExpressionError:
                errors += 1
                continue
            if hit:
                found.append(row)
                if len(found) >= limit:
                    return result("limit", position)
        if len(rows) < size:
            return result(None, None)
