"""Run and step metadata: what the JS SDK's metadata and scoring helpers attach to a run, a step,
one attempt of a step or a span of the app's own traces (step.metadata, inngest.metadata,
step.score, group.experiment, the SDK's AI metadata), as Inngest's server takes it.

Two ways in, one shape out:
- an op of a 206 answer or a checkpoint carries `metadata: [{kind, scope, op, values}]` for the
  step it reports (`from_op`);
- `POST /v1/runs/{runId}/metadata` carries `{target: {step_id?, step_index?, step_attempt?,
  span_id?}, metadata: [{kind, op, values}]}`; the target's fields decide the scope as in
  Inngest's API (`from_request`).
Each update is stored in pgqueue.run_metadata (pgqueue/store/run_metadata.py), combined with the
values already there by its op: `set` replaces them, `merge` adds and overwrites keys, `delete`
removes the keys it names, `add` adds numbers key by key. Limits, as Inngest's: 64 KB per update
(each key's bytes plus its JSON value's bytes), 1 MB of stored metadata per run, kinds of at most
128 characters, `inngest.*` kinds only from Inngest's allowlist, scores named
`[a-zA-Z_][a-zA-Z0-9_]{0,63}` with finite numbers (or booleans, which the JS SDK also sends) and
only on a run or a step.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pgqueue import storable
from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput, NotFound, PayloadTooLarge
from pgqueue.store import run_metadata, runs

MAX_UPDATE_BYTES = 64 * 1024  # Inngest's consts.MaxMetadataSpanSize
MAX_RUN_BYTES = 1024 * 1024  # Inngest's consts.MaxRunMetadataSize
MAX_KIND_LENGTH = 128
SCOPES = ("run", "step", "step_attempt", "extended_trace")
OPS = ("merge", "set", "delete", "add")
# The inngest.* kinds an SDK may write (Inngest's allowedInngestKinds); any other is refused, so
# an app cannot pass its metadata off as Inngest's own.
INNGEST_KINDS = frozenset({
    "inngest.ai", "inngest.http", "inngest.http.timing", "inngest.response_headers", "inngest.warnings",
    "inngest.experiment", "inngest.score",
})
SCORE_KIND = "inngest.score"
_SCORE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")


class InvalidMetadata(InvalidInput):
    """An update that is not metadata pgqueue can store: a bad kind, op, scope or values."""


class MetadataTooLarge(PayloadTooLarge):
    """An update over 64 KB, or a run whose metadata would exceed 1 MB."""


@dataclass(frozen=True, slots=True)
class Update:
    """One metadata write, at its target: `step_id` is the hashed step id ('' for the run),
    `attempt` -1 unless the scope is step_attempt, `span_id` '' unless extended_trace."""

    scope: str
    kind: str
    op: str
    values: dict[str, Any]
    size: int
    step_id: str = ""
    attempt: int = -1
    span_id: str = ""

    def to_row(self) -> dict[str, Any]:
        return {"scope": self.scope, "step_id": self.step_id, "attempt": self.attempt,
                "span_id": self.span_id, "kind": self.kind, "op": self.op, "values": self.values}


def values_size(values: dict[str, Any]) -> int:
    """Inngest's measure of an update: each key's bytes plus its JSON value's bytes."""
    return sum(len(k.encode()) + len(json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode())
               for k, v in values.items())


def _update(raw: Any, where: str, *, scope: str, step_id: str = "", attempt: int = -1,
            span_id: str = "") -> Update:
    if not isinstance(raw, dict):
        raise InvalidMetadata(f"{where} must be an object like "
                              '{"kind": ..., "op": ..., "values": {...}}')
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidMetadata(f"{where}: `kind` must be a non-empty string")
    if len(kind) > MAX_KIND_LENGTH:
        raise InvalidMetadata(f"{where}: `kind` is longer than {MAX_KIND_LENGTH} characters")
    if kind.startswith("inngest.") and kind not in INNGEST_KINDS:
        raise InvalidMetadata(f"{where}: kind {kind!r} is reserved: an inngest.* kind must be one of "
                              f"{', '.join(sorted(INNGEST_KINDS))} (use userland.<name> for your own)")
    op = raw.get("op")
    if op not in OPS:
        raise InvalidMetadata(f"{where}: `op` must be one of {', '.join(OPS)}, not {op!r}")
    values = raw.get("values")
    if not isinstance(values, dict):
        raise InvalidMetadata(f"{where}: `values` must be a JSON object")
    problem = storable.problem(values)
    if problem:
        raise InvalidMetadata(f"{where}: `values` {problem}")
    if kind == SCORE_KIND:
        if scope not in ("run", "step"):
            raise InvalidMetadata(f"{where}: scores target a run or a step, not scope {scope!r}")
        for name, value in values.items():
            if not _SCORE_NAME.fullmatch(name):
                raise InvalidMetadata(f"{where}: score name {name!r} must match "
                                      "[a-zA-Z_][a-zA-Z0-9_]{0,63}")
            number = value.get("value") if isinstance(value, dict) else value
            finite = isinstance(number, int) or (isinstance(number, float) and math.isfinite(number))
            if not finite:
                raise InvalidMetadata(f"{where}: score {name!r} must be a finite number")
    size = values_size(values)
    if size > MAX_UPDATE_BYTES:
        raise MetadataTooLarge(f"{where}: the update is {size} bytes; metadata updates are at most "
                               f"{MAX_UPDATE_BYTES} bytes (64 KB)")
    return Update(scope=scope, kind=kind, op=op, values=values, size=size, step_id=step_id,
                  attempt=attempt, span_id=span_id)


def from_op(raw: Any, *, step_id: str, attempt: int, label: str) -> list[Update]:
    """The updates an op carries in `metadata` for step `step_id` (its hashed id), made on
    `attempt`. Scope `run` is the run's; `step` and `step_attempt` the op's step. Raises
    InvalidMetadata or MetadataTooLarge."""
    where = f"the metadata of step {label!r}"
    if not isinstance(raw, list):
        raise InvalidMetadata(f"{where} must be a list of updates")
    updates = []
    for index, item in enumerate(raw):
        scope = item.get("scope") if isinstance(item, dict) else None
        if scope not in SCOPES or scope == "extended_trace":
            raise InvalidMetadata(f"{where}[{index}]: `scope` must be run, step or step_attempt, "
                                  f"not {scope!r}")
        if scope == "run":
            updates.append(_update(item, f"{where}[{index}]", scope="run"))
        else:
            updates.append(_update(item, f"{where}[{index}]", scope=scope, step_id=step_id,
                                   attempt=attempt if scope == "step_attempt" else -1))
    return updates


def hashed_step_id(step_id: str, index: int | None) -> str:
    """The SDKs' hashed id of the `index`-th use of a step id (0 or None: the first)."""
    raw = step_id if not index else f"{step_id}:{index}"
    return hashlib.sha1(raw.encode()).hexdigest()  # the SDKs' step ids: not a security use


def _optional_int(target: dict[str, Any], field: str) -> int | None:
    value = target.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMetadata(f"target.{field} must be an integer")
    return value


def from_request(body: Any, run_id: str) -> list[Update]:
    """The updates of a `POST /v1/runs/{runId}/metadata` body. The target decides the scope, as in
    Inngest's API: no step_id, the run; a step_id (the user's id, hashed here with step_index),
    the step, or one attempt of it with step_attempt >= 0; step_attempt and span_id together, a span
    of the app's own traces. Raises InvalidMetadata or MetadataTooLarge."""
    if not isinstance(body, dict):
        raise InvalidMetadata('the body must be a JSON object like {"target": {...}, "metadata": [...]}')
    target = body.get("target") if body.get("target") is not None else {}
    if not isinstance(target, dict):
        raise InvalidMetadata("`target` must be a JSON object")
    if target.get("run_id") not in (None, run_id):
        raise InvalidMetadata(f"target.run_id {target.get('run_id')!r} is not the run {run_id!r} of the path")
    step = target.get("step_id")
    index = _optional_int(target, "step_index")
    attempt = _optional_int(target, "step_attempt")
    span = target.get("span_id")
    if step is not None and (not isinstance(step, str) or not step):
        raise InvalidMetadata("target.step_id must be a non-empty string")
    if span is not None and (not isinstance(span, str) or not span):
        raise InvalidMetadata("target.span_id must be a non-empty string")
    if step is None:
        for field, value in (("step_index", index), ("step_attempt", attempt), ("span_id", span)):
            if value is not None:
                raise InvalidMetadata(f"target.step_id must be defined if target.{field} is defined")
    raw_updates = body.get("metadata")
    if not isinstance(raw_updates, list) or not raw_updates:
        raise InvalidMetadata("`metadata` must be a non-empty list of {kind, op, values} updates")
    if step is None:
        where: dict[str, Any] = {"scope": "run"}
    elif attempt is None or span is None:
        hashed = hashed_step_id(step, index)
        if attempt is None or attempt < 0:
            where = {"scope": "step", "step_id": hashed}
        else:
            where = {"scope": "step_attempt", "step_id": hashed, "attempt": attempt}
    else:
        where = {"scope": "extended_trace", "step_id": hashed_step_id(step, index), "span_id": span}
    return [_update(item, f"metadata[{index}]", **where) for index, item in enumerate(raw_updates)]


def metadata_error(exc: InvalidInput) -> dict[str, Any]:
    """The step error of a step whose metadata cannot be stored (the step fails: nothing the SDK
    sends is dropped)."""
    name = "MetadataTooLarge" if isinstance(exc, PayloadTooLarge) else "InvalidMetadata"
    return {"name": name, "message": exc.message}


async def write(conn: Conn, run_id: str, updates: list[Update]) -> int:
    """Store updates from the metadata API in one transaction under the run's row lock (the run
    may have ended: Inngest scores finished runs too). Returns the run's metadata bytes; raises
    NotFound or MetadataTooLarge (nothing stored)."""
    async with conn.transaction():
        if await runs.lock(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        try:
            return await run_metadata.put(conn, run_id, [u.to_row() for u in updates],
                                          max_run_bytes=MAX_RUN_BYTES)
        except run_metadata.RunLimitExceeded as exc:
            raise MetadataTooLarge(f"{exc.message} (Inngest's limit: 1 MB per run)") from None


def entry_json(row: dict[str, Any]) -> dict[str, Any]:
    """One stored metadata row as the REST API and the dashboard show it (Inngest's span metadata:
    scope, kind, values, updatedAt), with its target."""
    out: dict[str, Any] = {"scope": row["scope"], "kind": row["kind"], "values": row["values"],
                           "updated_at": row["updated_at"].isoformat()}
    if row["step_id"]:
        out["step_id"] = row["step_id"]
    if row["attempt"] >= 0:
        out["attempt"] = row["attempt"]
    if row["span_id"]:
        out["span_id"] = row["span_id"]
    return out
