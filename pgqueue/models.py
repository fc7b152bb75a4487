"""Domain values shared across the engine: states and the rows the store hands out."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class RunStatus(enum.StrEnum):
    """Mirrors SQL enum pgqueue.run_status (a test keeps the two in step)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def api_name(self) -> str:
        """The capitalised form Inngest's REST API uses."""
        return self.value.capitalize()

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class ItemState(enum.StrEnum):
    """Mirrors SQL enum pgqueue.item_state."""

    AVAILABLE = "available"
    LEASED = "leased"


DISCOVERY_STEP = "step"


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    run_id: str
    function_id: UUID
    kind: str  # 'call' | 'sleep'
    step_id: str
    step_name: str | None
    attempt: int
    max_attempts: int
    lease_token: UUID
    run_at: datetime
    run_started: bool = False  # this claim started the run (its first call)
    app_id: UUID | None = None  # the function's app (claim_v5 on): adaptive concurrency is per app
    # A call's run context read by the claim (claim_v6; pgqueue.store.runs.context's shape), else None.
    context: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # The worker lets this call's run continue on the item's lease when its answer is one step's
    # output (pgqueue.complete_v2): the next call is made at once, with the context it returns.
    may_continue: bool = field(default=False, compare=False)

    def continued(self, context: dict[str, Any]) -> QueueItem:
        """The run's next call on this item's lease: a discovery call, first attempt."""
        return dataclasses.replace(self, step_id=DISCOVERY_STEP, step_name=None, attempt=0, context=context,
                                   run_started=False, may_continue=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueueItem:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            function_id=row["function_id"],
            kind=row["kind"],
            step_id=row["step_id"],
            step_name=row["step_name"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            lease_token=row["lease_token"],
            run_at=row["run_at"],
            run_started=bool(row.get("run_started")),
            app_id=row.get("app_id"),
            context=row.get("context"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event as it is stored (id = pgqueue's internal ULID)."""

    id: str
    name: str
    data: dict[str, Any]
    ts: int
    user: dict[str, Any] | None = None
    v: str | None = None
    external_id: str | None = None
    # The sessions the event carries, resolved from its `meta` (pgqueue/events/meta.py)
    sessions: dict[str, str] | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "user": self.user,
            "ts": self.ts,
            "v": self.v,
            "external_id": self.external_id,
            "sessions": self.sessions,
        }


# -- synced configuration (validated by pgqueue.apps.registration) --------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    event: str | None = None
    expression: str | None = None
    cron: str | None = None
    jitter: str | None = None  # cron only: each tick's run starts up to this long after its slot

    @property
    def name_prefix(self) -> str | None:
        if self.event and self.event.endswith("*"):
            return self.event[:-1]
        return None

    @property
    def exact_name(self) -> str | None:
        if self.event and not self.event.endswith("*"):
            return self.event
        return None


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    slug: str
    name: str
    url: str
    retries: int
    triggers: tuple[Trigger, ...]
    config: dict[str, Any]
    finish_timeout_ms: int | None = None  # timeouts.finish, scheduled by the claim that starts a run


@dataclass(frozen=True, slots=True)
class AppSpec:
    name: str
    url: str
    sdk_language: str | None
    sdk_version: str | None
    framework: str | None
    app_version: str | None
    functions: tuple[FunctionSpec, ...]
    checksum: str
