-- 0005_cron: cron schedules, their fired slots, and the executor-kick debounce.
--
-- cron_schedules holds one row per (function, cron spec) with the next slot to fire. Schedulers
-- (the CronScheduler service in containers, `pgqueue tick` / the executor Lambda elsewhere) claim
-- due rows with FOR UPDATE SKIP LOCKED and keep the table in step with function_triggers, so a
-- re-sync that changes or drops a cron string replaces its schedule.
-- cron_ticks makes "one run per function per scheduled instant" a constraint: however many
-- schedulers tick at once, and even if a schedule row is re-created, a slot fires at most once.

CREATE TABLE pgqueue.cron_schedules (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    cron         text NOT NULL,                 -- as synced, with its TZ= / CRON_TZ= prefix
    next_at      timestamptz NOT NULL,          -- the next slot to fire (UTC instant)
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, cron)
);
CREATE INDEX cron_schedules_due ON pgqueue.cron_schedules (next_at);

CREATE TABLE pgqueue.cron_ticks (
    function_id   uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    scheduled_at  timestamptz NOT NULL,         -- the slot, not the time it was noticed
    cron          text NOT NULL,
    run_id        text,                         -- NULL when the slot was skipped
    skip_reason   text,                         -- e.g. 'function paused'
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, scheduled_at),
    CHECK ((run_id IS NULL) <> (skip_reason IS NULL))
);
CREATE INDEX cron_ticks_created ON pgqueue.cron_ticks (created_at);

-- One row: when the API last kicked the executor (serverless deployments). A guarded UPDATE on it
-- lets N concurrent API invocations agree that only one of them sends the kick.
CREATE TABLE pgqueue.executor_kicks (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_kick_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO pgqueue.executor_kicks DEFAULT VALUES;
