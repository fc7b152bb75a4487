-- 0016_privileges: the read-only role reads no payload; limits the caller cannot change (issue 22).
--
-- Why: sql/grants/readonly.sql grants SELECT on every inspection view, and views read their tables
-- with their owner's rights, so pgqueue.run_timeline (step outputs, run outputs, errors) and
-- pgqueue.recent_failures (error messages) handed a reader what a step returned, an API key
-- included. Those columns move to run_timeline_payload and recent_failures_payload (granted by
-- sql/grants/payload.sql to a role of their own); the views keep their names and their other
-- columns. CREATE OR REPLACE VIEW cannot drop a column, so both are dropped here and re-created
-- by sql/views/inspect.sql, which the migrator replays after the migrations.
DROP VIEW IF EXISTS pgqueue.run_timeline;
DROP VIEW IF EXISTS pgqueue.recent_failures;

-- Limits the SQL API enforces, owned by pgqueue's role (issue 22): pgqueue.send_event, send_events
-- and send_signal are SECURITY DEFINER and read their size limit here. They read it from the
-- session setting pgqueue.max_event_bytes before, which the calling role could SET to anything.
-- A role granted only the sender grant can neither read nor change this table; pgqueue's role
-- raises a limit with UPDATE (docs/sql.md). The setting's value at migration time (an
-- `ALTER DATABASE ... SET pgqueue.max_event_bytes`) is carried over.
CREATE TABLE pgqueue.limits (
    name text PRIMARY KEY CHECK (name IN ('max_event_bytes')),
    value bigint NOT NULL CHECK (value > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgqueue.limits (name, value)
SELECT 'max_event_bytes',
       CASE WHEN s.setting ~ '^[0-9]{1,12}$' AND s.setting::bigint > 0 THEN s.setting::bigint ELSE 524288 END
FROM (SELECT coalesce(current_setting('pgqueue.max_event_bytes', true), '') AS setting) s;

-- outbox_event_v1 read the setting; nothing but send_event and send_events called it, and they call
-- outbox_event_v2 from now on (sql/functions/outbox.sql). signal_send_v1 stays, as a wrapper of
-- version 2, for the previous release's API processes during a deploy (sql/functions/signals.sql).
DROP FUNCTION IF EXISTS pgqueue.outbox_event_v1(text, text, jsonb, text, bigint, jsonb, text);
