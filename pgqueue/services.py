"""Compose the background services of one process: listener, runner, worker, rescuer.

Start order: listener (so no wake-up is missed), rescuer, runner, worker. Stop order is the
reverse, with the worker's two-stage shutdown first so in-flight calls can finish.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from pgqueue.db import notify
from pgqueue.executor import invoke
from pgqueue.executor.execute import Executor
from pgqueue.queue.rescuer import Rescuer
from pgqueue.queue.worker import Worker
from pgqueue.runner.loop import Runner
from pgqueue.settings import Settings

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self.events_wakeup = notify.Wakeup()
        self.queue_wakeup = notify.Wakeup()
        poll_s = settings.poll_interval_ms / 1000.0
        self.listener = notify.Listener(
            settings.database_url or "",
            {notify.EVENTS_CHANNEL: self.events_wakeup, notify.QUEUE_CHANNEL: self.queue_wakeup},
        )
        self.client = invoke.new_client(
            connect_timeout_s=settings.connect_timeout_s, call_timeout_s=settings.call_timeout_s
        )
        self.executor = Executor(
            pool,
            self.client,
            signing_key=settings.signing_key,  # workers sign whenever a key is configured
            backoff_scale=settings.backoff_scale,
            max_response_bytes=settings.max_response_bytes,
        )
        self.runner = Runner(pool, wakeup=self.events_wakeup, queue_wakeup=self.queue_wakeup, poll_interval_s=poll_s)
        self.worker = Worker(
            pool,
            self.executor.execute,
            wakeup=self.queue_wakeup,
            concurrency=settings.worker_concurrency,
            lease_ms=settings.lease_ms,
            poll_interval_s=poll_s,
            fn_default_limit=settings.default_concurrency,
        )
        self.rescuer = Rescuer(pool, queue_wakeup=self.queue_wakeup, interval_s=min(2.0, settings.lease_ms / 3000.0))
        self.started = False

    def wake_runner(self) -> None:
        self.events_wakeup.set()

    async def start(self) -> None:
        self.listener.start()
        self.rescuer.start()
        self.runner.start()
        self.worker.start()
        self.started = True
        log.info("services started (worker %s, concurrency %d)", self.worker.name, self.worker.concurrency)

    async def stop(self) -> None:
        if not self.started:
            await self.client.aclose()
            return
        await self.worker.stop(self.settings.shutdown_grace_s)
        await self.runner.stop()
        await self.rescuer.stop()
        await self.listener.stop()
        await self.client.aclose()
        self.started = False
