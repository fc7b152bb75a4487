-- 0016_private_payloads: the read-only role reads no payload (issue 22).
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
