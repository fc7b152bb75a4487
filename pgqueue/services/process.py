"""Compose the background services of one process: listener, runner, worker, rescuer, cron, retention.

Start order: listener (so no wake-up is missed; not started behind a pooler, where LISTEN cannot
work and every service polls), rescuer, cron, runner, worker. Stop order is the
reverse, with the worker's two-stage shutdown first so in-flight calls can finish.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue import logging_setup, telemetry
from pgqueue.db import notify
from pgqueue.executor import invoke
from pgqueue.executor.execute import Executor
from pgqueue.models import QueueItem
from pgqueue.queue.adaptive import AppLimits, LimitPolicy
from pgqueue.queue.rescuer import Rescuer
from pgqueue.queue.worker import Worker
from pgqueue.runner.cron import CronScheduler
from pgqueue.runner.loop import Runner
from pgqueue.services.retention import Retention
from pgqueue.settings import Settings

log = logging.getLogger(__name__)

# Time a call's lease outlasts its deadline (PGQUEUE_CALL_TIMEOUT_S), to store its result.
APPLY_MARGIN_S = 60.0


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
        self.client = invoke.client_for(settings)
        # step.fetch / step.ai.infer: their own connections and egress policy.
        self.fetch_client = invoke.fetch_client_for(settings)
        # Adaptive concurrency per app: the executor reports each call, the worker's claim caps by it.
        self.app_limits = (
            AppLimits(LimitPolicy(floor=settings.adaptive_min,
                                  ceiling=settings.adaptive_max or settings.worker_concurrency),
                      max_held=settings.worker_concurrency)
            if settings.adaptive_concurrency else None
        )
        self.executor = Executor(
            pool,
            self.client,
            fetch_client=self.fetch_client,
            signing_key=settings.signing_key,  # workers sign whenever a key is configured
            signing_key_fallback=settings.signing_key_fallback,
            backoff_scale=settings.backoff_scale,
            max_response_bytes=settings.max_response_bytes,
            call_timeout_s=settings.call_timeout_s,
            max_api_response_bytes=settings.max_api_response_bytes,
            require_response_signature=settings.response_signature_required,
            checkpointing=settings.checkpointing,
            on_call=self.app_limits.observe if self.app_limits is not None else None,
            gate=self.app_limits.sending if self.app_limits is not None else None,
        )
        self.worker = Worker(
            pool,
            self._execute,
            wakeup=self.queue_wakeup,
            concurrency=settings.worker_concurrency,
            lease_ms=settings.lease_ms,
            poll_interval_s=poll_s,
            fn_default_limit=settings.default_concurrency,
            max_lease_s=settings.call_timeout_s + APPLY_MARGIN_S,
            backoff_scale=settings.backoff_scale,
            adaptive=self.app_limits,
        )
        # The runner hands the calls it queues straight to this process's worker (one hop).
        self.runner = Runner(pool, wakeup=self.events_wakeup, queue_wakeup=self.queue_wakeup,
                             poll_interval_s=poll_s, handoff=self.worker)
        self.rescuer = Rescuer(pool, queue_wakeup=self.queue_wakeup, interval_s=min(2.0, settings.lease_ms / 3000.0),
                               backoff_scale=settings.backoff_scale,
                               partition_width_s=settings.partition_width_hours * 3600.0,
                               realtime_retention_s=settings.realtime_retention_s)
        self.cron = CronScheduler(pool, queue_wakeup=self.queue_wakeup, interval_s=min(max(poll_s, 0.5), 5.0))
        # Finished runs and old events are pruned after PGQUEUE_RETENTION_DAYS (0 keeps everything).
        self.retention = (
            Retention(pool, retention_days=settings.retention_days) if settings.retention_days > 0 else None
        )
        self.started = False

    async def _execute(self, item: QueueItem) -> Any:
        # every log line of this item's execution names its run and function
        # and, when tracing is on, runs in the call's span (pgqueue.telemetry)
        with logging_setup.bind(run_id=item.run_id, function_id=item.function_id), telemetry.call(item):
            return await self.executor.execute(item)

    def wake_runner(self) -> None:
        self.events_wakeup.set()

    async def start(self) -> None:
        if not self.settings.pooler:
            self.listener.start()
        self.rescuer.start()
        self.cron.start()
        self.runner.start()
        self.worker.start()
        if self.retention is not None:
            self.retention.start()
        self.started = True
        log.info("services started (worker %s, concurrency %d)", self.worker.name, self.worker.concurrency)

    async def stop(self) -> None:
        if not self.started:
            await self.client.aclose()
            await self.fetch_client.aclose()
            return
        if self.retention is not None:
            await self.retention.stop()
        await self.worker.stop(self.settings.shutdown_grace_s)
        await self.runner.stop()
        await self.cron.stop()
        await self.rescuer.stop()
        await self.listener.stop()
        await self.client.aclose()
        await self.fetch_client.aclose()
        self.started = False
