"""Run one claimed queue item: load its run, call the app, apply the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from psycopg_pool import AsyncConnectionPool

from pgqueue import telemetry
from pgqueue.executor import completion, gateway, invoke, redaction, transport
from pgqueue.executor.apply import Applier, ApplyResult, SleepWoke, TimeoutFired
from pgqueue.models import QueueItem
from pgqueue.protocol import outcome, signing
from pgqueue.store import runs

log = logging.getLogger(__name__)

# Clock skew allowed between pgqueue and an app when checking the time in an answer's signature
# (the JS SDK allows the same on requests). A signature must be made during its call, give or take
# this: an older one is a replay.
SIGNATURE_SKEW_S = 300
REQUIRE_SETTING = "PGQUEUE_REQUIRE_RESPONSE_SIGNATURE"

# Answers that say "too much" rather than "the function failed" (a 500 is the SDKs' answer for an
# error the function raised, not a sign of load), and transport failures of a busy app.
OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})
OVERLOAD_ERRORS = frozenset({"CallTimedOut", "AppUnreachable", "ConnectionError"})

# Told of every call to an app: the item, the call's HTTP time in seconds, and whether the app
# answered like an overloaded one (adaptive concurrency, pgqueue.queue.adaptive).
CallObserver = Callable[[QueueItem, float, bool], None]
# Around each call's HTTP request, and only that (adaptive concurrency counts calls at the app):
# may wait for a free slot at the app.
CallGate = Callable[[QueueItem], contextlib.AbstractAsyncContextManager[None]]


def overloaded(response: outcome.Response | outcome.CallError) -> bool:
    if isinstance(response, outcome.CallError):
        transport = response.retriable and response.status_code is None
        busy = transport and response.error.get("name") in OVERLOAD_ERRORS
        return busy or response.status_code in OVERLOAD_STATUSES
    return response.status in OVERLOAD_STATUSES


class Executor:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        client: httpx.AsyncClient,
        *,
        fetch_client: gateway.Client | None = None,
        signing_key: str | None,
        signing_key_fallback: str | None = None,
        backoff_scale: float = 1.0,
        max_response_bytes: int = 16 * 1024 * 1024,
        call_timeout_s: float = 7200.0,
        max_api_response_bytes: int | None = None,
        require_response_signature: bool = False,
        checkpointing: bool = False,
        on_call: CallObserver | None = None,
        gate: CallGate | None = None,
    ) -> None:
        self.pool = pool
        self.client = client
        # step.fetch / step.ai.infer go out through their own client (its own egress policy, no
        # cookie jar; Services passes invoke.fetch_client_for): the calls' one by default.
        if fetch_client is None and isinstance(client, transport.AppClient):
            fetch_client = client
        self.fetch_client = fetch_client
        self.signing_key = signing_key
        self.signing_key_fallback = signing_key_fallback
        self.signing_keys = tuple(k for k in (signing_key, signing_key_fallback) if k)
        self.max_response_bytes = max_response_bytes
        self.call_timeout_s = call_timeout_s
        self.max_api_response_bytes = max_api_response_bytes
        self.checkpointing = checkpointing
        # Production: an answer without a signature is refused too, not only a wrong one (else
        # stripping the header would skip the check).
        self.require_response_signature = require_response_signature and bool(self.signing_keys)
        self.on_call = on_call
        self.gate = gate
        self.applier = Applier(backoff_scale=backoff_scale)
        self.completions = completion.CompletionBatcher(pool)

    async def execute(self, item: QueueItem) -> ApplyResult:
        started_at = datetime.now(UTC)
        if item.kind in ("sleep", "timeout"):
            woke = SleepWoke() if item.kind == "sleep" else TimeoutFired()
            async with self.pool.connection() as conn:
                return await self.applier.apply(conn, item, woke, started_at=started_at)

        ctx = item.context  # read by the claim (claim_v6)
        if ctx is None or (ctx["status"] == "queued" and not item.run_started):
            # Not read with the claim, or a run the claim could not start (its row was locked):
            # the run_context query starts it.
            async with self.pool.connection() as conn:
                ctx = await runs.context(conn, item.run_id)
        if ctx is None or ctx["status"] not in ("queued", "running"):
            async with self.pool.connection() as conn:
                return await self.applier.apply(
                    conn, item, outcome.transport_error("run is gone"), started_at=started_at
                )

        try:
            request = invoke.build(item, ctx, signing_key=self.signing_key,
                                   max_api_response_bytes=self.max_api_response_bytes,
                                   checkpointing=self.checkpointing)
        except invoke.StateTooLarge as exc:  # it only grows: no retry can fix that
            error = {"name": "StateTooLarge", "message": str(exc)}
            return await self.record(item, outcome.CallError(error, retriable=False), started_at=started_at)
        except ValueError as exc:  # the synced URL cannot be parsed: no retry can fix that
            shown = redaction.url(str(ctx["url"]))
            error = {"name": "AppUnreachable", "message": f"the app URL {shown!r} is not valid: {exc}"}
            return await self.record(item, outcome.CallError(error, retriable=False), started_at=started_at)
        telemetry.sending(request.headers, ctx)  # traces (optional): the app gets the call span's traceparent
        async with self.gate(item) if self.gate is not None else contextlib.nullcontext():
            sent = time.monotonic()
            response = await self._send(request)
            if (isinstance(response, outcome.Response) and response.status == 401
                    and self.signing_key_fallback and self.signing_key):
                # Key rotation: an app still on the previous key refuses the new key's signature.
                signature = signing.sign(request.body, self.signing_key_fallback)
                headers = {**request.headers, "x-inngest-signature": signature}
                request = dataclasses.replace(request, headers=headers)
                response = await self._send(request)
            if self.on_call is not None:
                self.on_call(item, time.monotonic() - sent, overloaded(response))
        if isinstance(response, outcome.CallError):
            result: outcome.Outcome = response
            body_size = 0
        elif refused := self._signature_error(response, elapsed_s=time.monotonic() - sent):
            result = refused
            body_size = 0
        else:
            result = outcome.parse(response)
            body_size = len(response.body)
        if isinstance(result, outcome.Ops) and gateway.has_requests(result):
            # step.fetch / step.ai.infer: pgqueue makes the request, within what is left of the
            # call's deadline (the item's lease is bounded by it).
            elapsed = (datetime.now(UTC) - started_at).total_seconds()
            if self.fetch_client is None:
                raise RuntimeError("this Executor has no client for step.fetch and step.ai.infer")
            deadline_s = self.call_timeout_s - elapsed
            performed = await gateway.perform(self.fetch_client, result, deadline_s=deadline_s)
            result, body_size = performed.outcome, body_size + performed.response_bytes
        if isinstance(result, outcome.CallError):
            log.info(
                "run %s step %s attempt %d: %s (retriable=%s)",
                item.run_id, item.step_id, item.attempt, result.error.get("message"), result.retriable,
            )
        return await self.record(item, result, started_at=started_at, body_size=body_size)

    async def _send(self, request: invoke.CallRequest) -> outcome.Response | outcome.CallError:
        return await invoke.send(self.client, request, max_response_bytes=self.max_response_bytes,
                                 deadline_s=self.call_timeout_s)

    def _signature_error(self, response: outcome.Response, *, elapsed_s: float) -> outcome.CallError | None:
        """Both SDKs sign every answer to a signed request with the key that signed it: the
        signature must match one of our keys and be made during the call. Without one the answer
        is refused when signatures are required (production), else taken as it is.

        Streamed (201) answers: the JS SDK signs the answer inside the envelope; the Python SDK
        signs only the outer headers, over the body it had when the stream began (`null`). That
        shows the app holds the key, not that the streamed content is the app's (see
        docs/security.md#egress-to-apps); it is accepted so that Python apps with streaming keep working."""
        if not self.signing_keys:
            return None
        candidates = [(response.headers.get("x-inngest-signature"), response.body)]
        if outcome.is_stream(response):
            inner = outcome.stream_envelope(response)
            if inner is None:
                return None  # outcome.parse reports the broken envelope
            if "x-inngest-signature" in inner.headers:
                candidates = [(inner.headers["x-inngest-signature"], inner.body)]
            else:
                candidates.append((candidates[0][0], b"null"))
        header = candidates[0][0]
        if header is None:
            return self._unsigned(response.status) if self.require_response_signature else None
        max_age_s = elapsed_s + SIGNATURE_SKEW_S
        if any(signing.verify(h, body, self.signing_keys, max_age_s=max_age_s) for h, body in candidates):
            return None
        message = (f"the app's answer (HTTP {response.status}) has an X-Inngest-Signature that does not match"
                   " this server's signing keys, or was not made during this call (a replayed answer);"
                   " retried like a failed call")
        return outcome.CallError({"name": "InvalidSignature", "message": message}, retriable=True,
                                 status_code=response.status)

    @staticmethod
    def _unsigned(status: int) -> outcome.CallError:
        """A proxy stripping headers is the likely cause, so this uses the app's retries like any
        failed call instead of failing the run at once."""
        if status == 401:
            why = ("the app refused this server's request signature (HTTP 401): check that the app's"
                   " INNGEST_SIGNING_KEY is PGQUEUE_SIGNING_KEY or PGQUEUE_SIGNING_KEY_FALLBACK")
        else:
            why = (f"the app's answer (HTTP {status}) has no X-Inngest-Signature, and production requires"
                   f" signed answers ({REQUIRE_SETTING}): a proxy may strip the header, or the SDK does not"
                   f" sign (set {REQUIRE_SETTING}=false for SDKs that don't)")
        error = {"name": "UnsignedResponse", "message": f"{why}; retried like a failed call"}
        return outcome.CallError(error, retriable=True, status_code=status)

    async def record(
        self, item: QueueItem, result: outcome.Outcome, *, started_at: datetime, body_size: int = 0
    ) -> ApplyResult:
        """Store what the call ended with. The two common endings (one step's output, the return
        value) go through the group commit; the rest, and whatever it hands back, through the
        general Applier.

        The app call already happened: losing its result to a dropped database connection would
        mean running the step again. Every apply is one transaction fenced by the lease token, so
        retrying it on a fresh connection is safe."""
        telemetry.called(result)  # traces (optional): the call's outcome and its steps
        elem = completion.element(item, result, started_at=started_at, body_size=body_size)
        if elem is not None:
            status, context = await self.completions.submit(elem)
            if status == "lost":
                log.info("lease lost for item %s of run %s; dropping its outcome", item.id, item.run_id)
            if status == completion.CONTINUED:
                return ApplyResult(applied=True, context=context)
            if status != completion.FALLBACK:
                return completion.RESULTS[status]

        async def apply() -> ApplyResult:
            async with self.pool.connection() as conn:
                return await self.applier.apply(conn, item, result, started_at=started_at,
                                                body_size=body_size)

        return await completion.with_db_retries(f"storing the result of item {item.id}", apply)
