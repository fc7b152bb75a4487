-- 0018_sessions_and_metadata: event sessions and run/step metadata (the JS SDK 4.x's wire details).
--
-- Why: an event may carry sessions (`meta.sessions`, and `meta.propagated_sessions` stamped by
-- a run that sent it). They are resolved into one map at ingest (pgqueue/events/meta.py) and kept
-- with the event, because every event a run sees carries them back in `meta.sessions` (the SDK's
-- ctx.sessions is their intersection over the run's events). NULL: the event has none.
ALTER TABLE pgqueue.events ADD COLUMN sessions jsonb;
