"""Server-initiated sync: PUT the app's serve URL so its SDK registers with us (`-u`, /v1/apps/sync),
and the egress check of the URLs an app registers.

The PUT goes wherever the caller says, so it must not become a way to read other services: the
egress policy decides where it may go, the answer is read up to MAX_SYNC_ANSWER_BYTES and then
dropped, and a failure is reported by status code only, never with the answer's content (the
registration itself arrives separately, as the SDK's own POST /fn/register).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import httpx

from pgqueue.errors import InvalidInput
from pgqueue.executor import egress
from pgqueue.models import AppSpec
from pgqueue.protocol import signing
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

# An SDK answers a sync PUT with a few hundred bytes; the rest of a bigger answer is never read.
MAX_SYNC_ANSWER_BYTES = 1024 * 1024
SYNC_DEADLINE_S = 30.0


@dataclass(frozen=True, slots=True)
class SyncAttempt:
    ok: bool
    status: int | None
    error: str | None = None


def server_kind(settings: Settings) -> str:
    return "cloud" if settings.production else "dev"


async def sync_app(client: httpx.AsyncClient, url: str, settings: Settings) -> SyncAttempt:
    body = json.dumps({"url": url}).encode()
    headers = {"content-type": "application/json", "x-inngest-server-kind": server_kind(settings)}
    if settings.production and settings.signing_key:
        headers["x-inngest-signature"] = signing.sign(body, settings.signing_key)
    try:
        async with asyncio.timeout(SYNC_DEADLINE_S):
            status, sdk = await _put(client, url, body, headers)
    except TimeoutError:
        return SyncAttempt(False, None, f"{url} did not answer within {SYNC_DEADLINE_S:g} s")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return SyncAttempt(False, None, f"{url!r} is not a valid app URL: {exc}")
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        if refusal := egress.refusal_of(exc):
            return SyncAttempt(False, None, refusal)
        return SyncAttempt(False, None, f"could not reach {url}: {type(exc).__name__}: {exc}")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        # Only the type: a protocol error's text can quote what the other end sent (a banner).
        return SyncAttempt(False, None, f"could not reach {url}: {type(exc).__name__}")
    if status != 200:
        if sdk:
            return SyncAttempt(False, status, f"the app's SDK answered HTTP {status}; the app's log says why")
        return SyncAttempt(False, status, f"{url} answered HTTP {status} without an X-Inngest-SDK header:"
                                          " is it the app's serve endpoint?")
    return SyncAttempt(True, status)


async def _put(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bool]:
    """PUT and read at most MAX_SYNC_ANSWER_BYTES of the answer; leaving the stream early closes
    the connection, so a huge answer is cut instead of buffered."""
    async with client.stream("PUT", url, content=body, headers=headers) as resp:
        size = 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > MAX_SYNC_ANSWER_BYTES:
                log.info("sync of %s: answer over %d bytes, not read further", url, MAX_SYNC_ANSWER_BYTES)
                break
        return resp.status_code, "x-inngest-sdk" in resp.headers


async def sync_until_reachable(
    client: httpx.AsyncClient, url: str, settings: Settings, *, max_delay_s: float = 5.0
) -> None:
    """Used for `-u` URLs at start-up: keep trying until the app answers."""
    delay = 0.25
    while True:
        attempt = await sync_app(client, url, settings)
        if attempt.ok:
            log.info("synced app at %s", url)
            return
        log.info("app at %s not synced yet (%s); retrying in %.1fs", url, attempt.error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


async def check_urls(spec: AppSpec, settings: Settings) -> None:
    """Refuse a registration whose app or function URLs the egress policy would refuse at every
    call (InvalidInput, a 400 naming the setting). Calls are checked again at connect time."""
    policy = egress.Policy.from_settings(settings)
    urls = dict.fromkeys([spec.url, *(f.url for f in spec.functions)])
    checked: dict[str, str | None] = {}
    for url in urls:
        origin = _origin(url)
        if origin not in checked:
            checked[origin] = await egress.check_url(url, policy, timeout_s=settings.connect_timeout_s)
        if checked[origin]:
            raise InvalidInput(f"app URL {url} is not allowed: {checked[origin]}")


def _origin(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"
