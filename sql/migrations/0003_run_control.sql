-- 0003_run_control: idempotency keys, singletons, bulk cancellations, step/state accounting.

-- At most one run per (function, idempotency key value) per 24 hours.
CREATE TABLE pgqueue.idempotency_keys (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    run_id       text NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (function_id, key)
);
CREATE INDEX idempotency_keys_expires ON pgqueue.idempotency_keys (expires_at);

-- The one active run of a singleton function per key; released when the run ends.
CREATE TABLE pgqueue.singletons (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    run_id       text NOT NULL,
    PRIMARY KEY (function_id, key)
);
CREATE INDEX singletons_run ON pgqueue.singletons (run_id);

CREATE TABLE pgqueue.cancellations (
    id               text PRIMARY KEY,
    app_id           uuid NOT NULL REFERENCES pgqueue.apps (id) ON DELETE CASCADE,
    function_id      uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    started_after    timestamptz,
    started_before   timestamptz NOT NULL,
    expression       text,
    cancelled_count  integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE pgqueue.runs ADD COLUMN step_count integer NOT NULL DEFAULT 0;
ALTER TABLE pgqueue.runs ADD COLUMN state_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE pgqueue.runs ADD COLUMN replay_of text;
