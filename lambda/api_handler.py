"""AWS Lambda entry point of the HTTP API: `api_handler.handler`.

Answers API Gateway HTTP API (payload 2.0) and REST API (1.0) events, Lambda Function URL events
and ALB target-group events through Mangum, with the same FastAPI app as `pgqueue serve`.
Mangum runs with lifespan="off" (it would run the lifespan on every invocation): the connection
pool is opened by the first request and reused by every warm invocation of this container. The
event loop is kept at module level too, since the pool belongs to the loop that opened it.

Settings come from the environment and the secrets (pgqueue.serverless.aws) and are re-read at most once a
minute, so a rotated or removed event key or signing key takes effect in warm containers too; a
changed DATABASE_URL makes the next request open a new pool. Logging follows PGQUEUE_LOG_LEVEL and
PGQUEUE_LOG_FORMAT (JSON lines in CloudWatch) instead of the runtime's default.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mangum import Mangum
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from pgqueue import telemetry
from pgqueue.db.pool import open_pool
from pgqueue.serverless import aws

# One request at a time per container: a small pool; total connections = concurrency x this.
API_POOL_MAX = 2

source = aws.LambdaSettings()
settings = source.current
aws.configure_logging(settings)
pool_opens = 0  # how many times this container opened its pool (1 after a cold start)
_loop = asyncio.new_event_loop()


async def _open_pool() -> AsyncConnectionPool:
    global pool_opens
    pool_opens += 1
    assert settings.database_url
    return await open_pool(
        settings.database_url, min_size=1, max_size=min(settings.pool_size, API_POOL_MAX), name="pgqueue-api",
        pooler=True,
    )


app = create_app(settings, run_services=False, open_pool_lazily=_open_pool)
_mangum = Mangum(app, lifespan="off")


def fit(event: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A response too large for Lambda (6 MB as serialized JSON) becomes a 413 that says so,
    instead of the gateway's opaque 502."""
    limit = settings.max_api_response_bytes
    size = len(json.dumps(response))
    if limit is None or size <= limit:
        return response
    body = json.dumps({
        "error": "ResponseTooLarge",
        "message": f"the answer is {size} bytes and AWS Lambda returns at most {limit} "
                   "(PGQUEUE_MAX_API_RESPONSE_BYTES): ask for less (a smaller `limit`), or run the API "
                   "in a container",
    })
    fitted: dict[str, Any] = {"statusCode": 413, "headers": {"content-type": "application/json"},
                              "body": body, "isBase64Encoded": False}
    if "elb" in (event.get("requestContext") or {}):
        fitted["statusDescription"] = "413 Payload Too Large"
    return fitted


def _refresh_settings() -> None:
    """Use the settings as the secrets hold them now (re-read at most every aws.SETTINGS_TTL_S)."""
    global settings
    fresh = source.get()
    if fresh is settings:
        return
    if fresh.database_url != settings.database_url and app.state.pool is not None:
        stale, app.state.pool = app.state.pool, None  # the next request opens one on the new URL
        _loop.run_until_complete(stale.close())
    settings = fresh
    app.state.settings = fresh  # what the authentication dependencies read on every request


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Mangum runs the request on asyncio.get_event_loop(): make that this container's loop.
    asyncio.set_event_loop(_loop)
    _refresh_settings()
    try:
        return fit(event, _mangum(event, context))
    finally:
        telemetry.flush()  # traces (optional): a frozen container exports nothing until it thaws
