-- 0001_initial: the core engine schema.
-- Everything lives in schema pgqueue and is written schema-qualified, so no connection needs a
-- search_path (PgBouncer transaction mode and RDS Proxy share sessions between clients).

CREATE TYPE pgqueue.run_status AS ENUM ('queued', 'running', 'completed', 'failed', 'cancelled');
-- queued: created, no call made yet; running: at least one call claimed; the rest are terminal.

CREATE TYPE pgqueue.item_state AS ENUM ('available', 'leased');
-- available: waits for run_at; leased: a worker holds it (lease_token, lease_expires_at).
-- Finished items are deleted (their history is in pgqueue.attempts), which keeps the hot table small.

CREATE TABLE pgqueue.apps (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL UNIQUE,
    url           text NOT NULL,
    sdk_language  text,
    sdk_version   text,
    framework     text,
    app_version   text,
    checksum      text,
    sync_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    synced_at     timestamptz
);

CREATE TABLE pgqueue.functions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id       uuid NOT NULL REFERENCES pgqueue.apps (id) ON DELETE CASCADE,
    slug         text NOT NULL UNIQUE,          -- composite id the SDK sends: <app>-<fn>
    name         text NOT NULL,
    url          text NOT NULL,                 -- runtime URL, carries ?fnId=&stepId=step
    config       jsonb NOT NULL,                -- normalised configuration as synced
    retries      integer NOT NULL DEFAULT 4 CHECK (retries BETWEEN 0 AND 20),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz,                   -- set when a re-sync no longer lists it
    paused_at    timestamptz
);
CREATE INDEX functions_app ON pgqueue.functions (app_id);

CREATE TABLE pgqueue.function_triggers (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    position     integer NOT NULL,
    event_name   text,          -- exact event name, NULL for wildcard and cron triggers
    name_prefix  text,          -- wildcard trigger 'app/*' is stored as prefix 'app/'
    expression   text,
    cron         text,
    PRIMARY KEY (function_id, position),
    CHECK (num_nonnulls(event_name, name_prefix, cron) = 1)
);
CREATE INDEX function_triggers_event ON pgqueue.function_triggers (event_name) WHERE event_name IS NOT NULL;
CREATE INDEX function_triggers_prefix ON pgqueue.function_triggers (name_prefix) WHERE name_prefix IS NOT NULL;

-- Events are append-only; the runner's work list is the small event_inbox table, claimed with
-- SKIP LOCKED and deleted in the same transaction that creates the runs, so an event is either
-- fully processed or still in the inbox (safe under out-of-order commits, unlike a cursor).
CREATE TABLE pgqueue.events (
    id           text PRIMARY KEY,               -- internal ULID, returned to the sender
    name         text NOT NULL,
    data         jsonb NOT NULL,
    "user"       jsonb,
    ts           bigint NOT NULL,                -- milliseconds since the epoch
    v            text,
    external_id  text,                           -- the sender's own `id` (idempotency key)
    received_at  timestamptz NOT NULL DEFAULT now(),
    skip_reason  text                            -- why the event started nothing, when known
);
CREATE INDEX events_received ON pgqueue.events (received_at DESC, id DESC);
CREATE INDEX events_name_received ON pgqueue.events (name, received_at DESC);

CREATE TABLE pgqueue.event_inbox (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  text NOT NULL
);

CREATE TABLE pgqueue.event_dedupe (
    external_id  text PRIMARY KEY,
    event_id     text NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE TABLE pgqueue.runs (
    id               text PRIMARY KEY,           -- ULID
    function_id      uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    event_id         text NOT NULL,              -- the (first) triggering event
    event_ids        text[] NOT NULL,            -- every event of the run (batches)
    status           pgqueue.run_status NOT NULL DEFAULT 'queued',
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    request_version  integer NOT NULL DEFAULT -1,
    force_step_plan  boolean NOT NULL DEFAULT false,
    output           jsonb,
    error            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    ended_at         timestamptz,
    CHECK ((status IN ('queued', 'running')) = (ended_at IS NULL))
);
CREATE INDEX runs_event_ids ON pgqueue.runs USING gin (event_ids);
CREATE INDEX runs_function_created ON pgqueue.runs (function_id, created_at DESC);
CREATE INDEX runs_created ON pgqueue.runs (created_at DESC, id DESC);

-- One row per memoised step; the primary key makes "first stored output wins" a constraint.
CREATE TABLE pgqueue.steps (
    run_id      text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    step_id     text NOT NULL,                   -- hashed step id, as the SDK reports it
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    name        text,
    op          text NOT NULL,
    memo        jsonb NOT NULL,                  -- exactly the value handed back in `steps`
    attempt     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE pgqueue.queue_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    function_id       uuid NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('call', 'sleep')),
    step_id           text NOT NULL,             -- 'step' = discovery call, else a hashed step id
    step_name         text,
    state             pgqueue.item_state NOT NULL DEFAULT 'available',
    run_at            timestamptz NOT NULL DEFAULT now(),
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    leased_by         text,
    leased_at         timestamptz,
    last_error        jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'leased') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
) WITH (fillfactor = 80);
CREATE INDEX queue_items_due ON pgqueue.queue_items (run_at, id) WHERE state = 'available';
CREATE INDEX queue_items_lease ON pgqueue.queue_items (lease_expires_at) WHERE state = 'leased';
CREATE UNIQUE INDEX queue_items_one_per_step ON pgqueue.queue_items (run_id, step_id);

-- Append-only history of every call and wake-up: what /v1/runs/{id}/jobs and the timeline show.
CREATE TABLE pgqueue.attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    item_id      bigint NOT NULL,
    step_id      text NOT NULL,
    attempt      integer NOT NULL,
    outcome      text NOT NULL,                  -- ok | retry | failed | discarded
    status_code  integer,
    error        jsonb,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX attempts_run ON pgqueue.attempts (run_id, id);
