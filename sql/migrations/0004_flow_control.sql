-- 0004_flow_control: concurrency keys, throttle, rate limit, debounce, batching, priority, fairness.
--
-- Concurrency: every call item carries its concurrency keys (ckeys) and their limits (climits),
-- computed once per run from the function's configuration and the run's event. A claim admits an
-- item only while fewer than `limit` items with the same key are leased, serialised per key with
-- pg_try_advisory_xact_lock. Items over a limit are parked (blocked = true, blocked_key) instead
-- of being scanned again and again; when a leased item with that key ends, one parked item is
-- unparked (trigger queue_items_unblock), and the rescuer sweeps as a safety net.
-- Priority: items are ordered by sort_at = run_at - priority_s (kept by a trigger).

ALTER TABLE pgqueue.runs
    ADD COLUMN ckeys text[] NOT NULL DEFAULT '{}',
    ADD COLUMN climits integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN priority_s integer NOT NULL DEFAULT 0 CHECK (priority_s BETWEEN -43200 AND 43200);

ALTER TABLE pgqueue.queue_items
    ADD COLUMN ckeys text[] NOT NULL DEFAULT '{}',
    ADD COLUMN climits integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN priority_s integer NOT NULL DEFAULT 0,
    ADD COLUMN sort_at timestamptz,
    ADD COLUMN blocked boolean NOT NULL DEFAULT false,
    ADD COLUMN blocked_key text,
    ADD COLUMN throttle_key text,
    ADD COLUMN throttle jsonb,
    ADD CONSTRAINT queue_items_ckeys_limits CHECK (cardinality(ckeys) = cardinality(climits));

CREATE FUNCTION pgqueue.queue_items_sort_at_v1() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.sort_at := NEW.run_at - make_interval(secs => NEW.priority_s);
    RETURN NEW;
END
$$;
CREATE TRIGGER queue_items_sort_at BEFORE INSERT OR UPDATE OF run_at, priority_s ON pgqueue.queue_items
    FOR EACH ROW EXECUTE FUNCTION pgqueue.queue_items_sort_at_v1();
UPDATE pgqueue.queue_items SET run_at = run_at;
ALTER TABLE pgqueue.queue_items ALTER COLUMN sort_at SET NOT NULL;

DROP INDEX pgqueue.queue_items_due;
CREATE INDEX queue_items_due ON pgqueue.queue_items (function_id, sort_at, id)
    WHERE state = 'available' AND NOT blocked;
CREATE INDEX queue_items_due_any ON pgqueue.queue_items (sort_at, id)
    WHERE state = 'available' AND NOT blocked;
CREATE INDEX queue_items_leased_keys ON pgqueue.queue_items USING gin (ckeys) WHERE state = 'leased';
CREATE INDEX queue_items_blocked ON pgqueue.queue_items (blocked_key, sort_at, id) WHERE blocked;

-- GCRA state for throttle (run starts) and rate limit (run creation): the theoretical arrival time.
CREATE TABLE pgqueue.gcra_state (
    key         text PRIMARY KEY,          -- 'throttle:<fn>:<key>' or 'ratelimit:<fn>:<key>'
    tat         timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One open debounce per (function, key): its run waits, queued, for the last event.
CREATE TABLE pgqueue.debounces (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    run_id       text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    first_at     timestamptz NOT NULL,
    PRIMARY KEY (function_id, key)
);

-- One open batch per (function, key): its run waits, queued, until full or timed out.
CREATE TABLE pgqueue.batches (
    function_id  uuid NOT NULL REFERENCES pgqueue.functions (id) ON DELETE CASCADE,
    key          text NOT NULL,
    run_id       text NOT NULL REFERENCES pgqueue.runs (id) ON DELETE CASCADE,
    size         integer NOT NULL,
    first_at     timestamptz NOT NULL,
    PRIMARY KEY (function_id, key)
);

-- The default per-function bound counts leased items per function.
CREATE INDEX queue_items_leased_fn ON pgqueue.queue_items (function_id) WHERE state = 'leased';
