"""Start runs in the transaction that stores the events: one hop from event to first step.

POST /e stores events and queues them in pgqueue.event_inbox; the runner then claims them,
resumes waiting runs and starts new ones, and the workers claim the new runs' first calls: three
commits and two wake-ups. Here the API does the runner's work for its own events inside its
transaction, so the events' runs exist (and the workers are woken) when the request commits.

Only the simple case is taken: when a function the events may trigger debounces, batches or rate
limits, those decisions serialise on shared rows, and the events are left to the runner. An error
tied to one event is recorded on it exactly as the runner records it (loop.process); anything else
rolls the savepoint back and leaves the inbox rows: the inbox remains the path for everything else
and for recovery, so nothing is lost either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.runner import loop
from pgqueue.store import apps, events

log = logging.getLogger(__name__)

_SERIALISED = ("debounce", "batchEvents", "rateLimit")


class _LeftToTheRunner(Exception):
    pass


def _simple(candidates: Sequence[dict[str, Any]]) -> bool:
    return not any((c.get("config") or {}).get(key) for c in candidates for key in _SERIALISED)


async def start(conn: Conn, event_ids: Sequence[str], names: Sequence[str]) -> bool:
    """Process the just-stored events (ids in order, their names) in the caller's transaction.
    True when they were taken from the inbox and handled here; False when the runner will."""
    try:
        async with conn.transaction():
            candidates = await apps.trigger_candidates(conn, sorted(set(names)))
            if not _simple(candidates):
                raise _LeftToTheRunner
            claimed = await events.take_from_inbox(conn, event_ids)
            if not claimed:
                raise _LeftToTheRunner
            await loop.process(conn, claimed, candidates=candidates)
    except _LeftToTheRunner:
        return False
    except Exception as exc:
        if loop.transient(conn, exc):
            raise
        log.warning("starting runs for %d events at ingest failed (%s); the runner takes them",
                    len(event_ids), type(exc).__name__)
        return False
    return True
