-- 0002_pauses: runs waiting for events — step.waitForEvent, cancelOn listeners and invoke
-- completions — matched in O(1) per incoming event.
-- At creation a pause's expression has every `event.*` value substituted as a typed literal, so
-- it only references `async.*`; one equality literal it needs (e.g. async.data.id == "u_1") is
-- stored in match_path/match_value and indexed. An incoming event looks up the paths known for
-- its name (pause_paths, tiny), then finds candidates by index and evaluates only those.

ALTER TABLE pgqueue.queue_items DROP CONSTRAINT queue_items_kind_check;
ALTER TABLE pgqueue.queue_items ADD CONSTRAINT queue_items_kind_check
    CHECK (kind IN ('call', 'sleep', 'timeout'));

CREATE TABLE pgqueue.pauses (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('wait', 'cancel', 'invoke')),
    step_id        text,                         -- the waiting step (wait, invoke); NULL for cancel
    step_name      text,
    event_name     text NOT NULL,
    expression     text,                         -- only references `async` (NULL: any event matches)
    trigger_event  jsonb,                        -- set only when the expression kept `event` refs
    match_path     text,                         -- e.g. 'data.id'; NULL when not indexable
    match_value    jsonb,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz,
    CHECK ((kind = 'cancel') = (step_id IS NULL)),
    CHECK ((match_path IS NULL) = (match_value IS NULL))
);
CREATE INDEX pauses_match ON pgqueue.pauses (event_name, match_path, match_value) WHERE match_path IS NOT NULL;
CREATE INDEX pauses_unindexed ON pgqueue.pauses (event_name) WHERE match_path IS NULL;
CREATE INDEX pauses_run ON pgqueue.pauses (run_id);
CREATE UNIQUE INDEX pauses_one_per_step ON pgqueue.pauses (run_id, step_id) WHERE step_id IS NOT NULL;

CREATE TABLE pgqueue.pause_paths (
    event_name  text NOT NULL,
    match_path  text NOT NULL,
    PRIMARY KEY (event_name, match_path)
);

-- The invoke correlation of a run started by step.invoke (child run -> parent step).
ALTER TABLE pgqueue.runs ADD COLUMN correlation_id text;
