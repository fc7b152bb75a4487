"""Server-initiated sync: PUT the app's serve URL so its SDK registers with us (`-u`, /v1/apps/sync)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from pgqueue.executor import signing
from pgqueue.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncAttempt:
    ok: bool
    status: int | None
    body: Any
    error: str | None = None


def server_kind(settings: Settings) -> str:
    return "cloud" if settings.production else "dev"


async def sync_app(client: httpx.AsyncClient, url: str, settings: Settings) -> SyncAttempt:
    body = json.dumps({"url": url}).encode()
    headers = {"content-type": "application/json", "x-inngest-server-kind": server_kind(settings)}
    if settings.production and settings.signing_key:
        headers["x-inngest-signature"] = signing.sign(body, settings.signing_key)
    try:
        resp = await client.put(url, content=body, headers=headers, timeout=30.0)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return SyncAttempt(False, None, None, f"{url!r} is not a valid app URL: {exc}")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return SyncAttempt(False, None, None, f"could not reach {url}: {type(exc).__name__}: {exc}")
    try:
        parsed: Any = resp.json()
    except ValueError:
        parsed = resp.text[:500]
    if resp.status_code != 200:
        message = parsed.get("message") if isinstance(parsed, dict) else None
        return SyncAttempt(False, resp.status_code, parsed, message or f"the app answered HTTP {resp.status_code}")
    return SyncAttempt(True, resp.status_code, parsed)


async def sync_until_reachable(client: httpx.AsyncClient, url: str, settings: Settings, *, max_delay_s: float = 5.0) -> None:
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
