-- 0018_webhooks_and_event_keys: how events arrive beyond POST /e with a static key.
--
-- Why: Inngest has webhooks (a URL of the event API's form whose requests a JavaScript transform
-- turns into events) and managed event keys (created, named, revoked and limited to event names
-- without a restart); pgqueue had neither, only PGQUEUE_EVENT_KEYS in the environment, in clear.
-- Every key is stored as the hex SHA-256 of its text (shown once, when it is created), plus a
-- short prefix to recognise it by. A webhook's signature secret is stored encrypted
-- (pgqueue/events/secrets.py). Deliveries keep the raw request of a failed one so that it can be
-- re-delivered once the transform is fixed. apps.previous_url records where a sync moved an
-- app's functions from (two apps sharing an id), for the sync's warning and the dashboard.

CREATE TABLE pgqueue.event_keys (
    id           text PRIMARY KEY,                            -- ULID
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    key_hash     text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix   text NOT NULL,
    event_names  text[],                                      -- NULL: any event; else these ('app/*' wildcards)
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE pgqueue.webhooks (
    id           text PRIMARY KEY,                            -- ULID
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    key_hash     text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix   text NOT NULL,
    transform    text NOT NULL CHECK (char_length(transform) <= 65536),
    -- Signature verification: NULL (none) or {"scheme": "hmac-sha256" | "github" | "stripe" |
    -- "standard-webhooks", "header"?: <name>, "tolerance_s"?: <seconds>}; its secret is secret_enc.
    verify       jsonb,
    secret_enc   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((verify IS NULL) = (secret_enc IS NULL))
);

-- One row per request to a webhook's URL. outcome: accepted (events stored, event_ids), failed
-- (the transform threw, timed out or returned no valid event: the raw request is kept in
-- body/headers/query for a re-delivery), refused (bad signature or too large: nothing kept but
-- the headers), redelivered (a failed delivery whose re-delivery was accepted: see redelivery_id).
CREATE TABLE pgqueue.webhook_deliveries (
    id             text PRIMARY KEY,                          -- ULID
    webhook_id     text NOT NULL REFERENCES pgqueue.webhooks (id) ON DELETE CASCADE,
    outcome        text NOT NULL CHECK (outcome IN ('accepted', 'failed', 'refused', 'redelivered')),
    status_code    integer NOT NULL,
    error          text,
    method         text NOT NULL DEFAULT 'POST',
    content_type   text,
    headers        jsonb NOT NULL DEFAULT '{}',
    query          jsonb NOT NULL DEFAULT '{}',
    body           bytea,
    body_bytes     integer NOT NULL DEFAULT 0,
    event_ids      text[] COLLATE "C" NOT NULL DEFAULT '{}',   -- "C": as every event id column (0017)
    redelivery_of  text,                                      -- the failed delivery this one re-delivered
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_webhook ON pgqueue.webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_received ON pgqueue.webhook_deliveries (received_at);

ALTER TABLE pgqueue.apps
    ADD COLUMN previous_url text,
    ADD COLUMN url_changed_at timestamptz;
