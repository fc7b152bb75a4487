"""AWS Lambda entry point of the HTTP API: `api_handler.handler`.

Answers API Gateway HTTP API (payload 2.0) and REST API (1.0) events, Lambda Function URL events
and ALB target-group events through Mangum, with the same FastAPI app as `pgqueue serve`.
Mangum runs with lifespan="off" (it would run the lifespan on every invocation): the connection
pool is opened by the first request and reused by every warm invocation of this container. The
event loop is kept at module level too, since the pool belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mangum import Mangum
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from pgqueue import aws
from pgqueue.db.pool import open_pool

# One request at a time per container: a small pool; total connections = concurrency x this.
API_POOL_MAX = 2

settings = aws.lambda_settings()
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


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Mangum runs the request on asyncio.get_event_loop(): make that this container's loop.
    asyncio.set_event_loop(_loop)
    return _mangum(event, context)
