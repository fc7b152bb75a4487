-- 0019_sessions_and_metadata: event sessions and run/step metadata (the JS SDK 4.x's wire details).
--
-- Why, 1: an event may carry sessions (`meta.sessions`, and `meta.propagated_sessions` stamped by
-- a run that sent it). They are resolved into one map at ingest (pgqueue/events/meta.py) and kept
-- with the event, because every event a run sees carries them back in `meta.sessions` (the SDK's
-- ctx.sessions is their intersection over the run's events). NULL: the event has none.
ALTER TABLE pgqueue.events ADD COLUMN sessions jsonb;

-- Why, 2: the SDK's metadata and scoring helpers (step.metadata, inngest.metadata, step.score,
-- group.experiment) attach metadata to a run, a step, one attempt of a step, or a span of the
-- app's own traces, through an op's `metadata` or POST /v1/runs/{runId}/metadata. One row per
-- (run, target, kind): later writes combine with it by their op (merge, set, delete, add), as
-- Inngest's metadata spans do. `size` is the row's values in Inngest's measure (each key's bytes
-- plus its JSON value's bytes), kept so a run's total is bounded without re-reading the values.
CREATE TABLE pgqueue.run_metadata (
    run_id      text COLLATE "C" NOT NULL,       -- no FK to runs: history partitions (0017); pruned with its run
    scope       text NOT NULL CHECK (scope IN ('run', 'step', 'step_attempt', 'extended_trace')),
    step_id     text NOT NULL DEFAULT '',        -- hashed step id; '' for the run scope
    attempt     integer NOT NULL DEFAULT -1,     -- the attempt (scope step_attempt); -1 otherwise
    span_id     text NOT NULL DEFAULT '',        -- the app's span (scope extended_trace); '' otherwise
    kind        text NOT NULL,                   -- 'userland.<name>', 'inngest.score', ...
    "values"    jsonb NOT NULL CHECK (jsonb_typeof("values") = 'object'),
    size        integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, scope, step_id, attempt, span_id, kind)
);
