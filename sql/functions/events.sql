-- pgqueue.event_ingest_v1: store a batch of validated events and queue them for the runner, in
-- one statement. Events whose id already exists (an SDK retrying a send whose answer was lost:
-- ids derive from the request's seed) are skipped; a sender-supplied `external_id` seen within
-- 24 h makes the event a duplicate: stored, acknowledged, but it triggers nothing. The window is
-- keyed by `dedupe_key` (pgqueue.ids.compact_key of the id, so an id of any size fits the index);
-- a caller that does not send it (an older pgqueue during a deploy) dedupes on the id itself.
-- `sessions` (migration 0019) is the event's resolved sessions, or absent/null.
-- Returns the number of events handed to the runner; wakes the runner once (NOTIFY coalesces).
CREATE OR REPLACE FUNCTION pgqueue.event_ingest_v1(p_events jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
-- "is this id stored already" probes the events' primary key: the kept plan, made for the size
-- of events at the time, hashed the whole table on every request (planner: 100 input rows)
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    queued integer;
BEGIN
    WITH input AS (
        SELECT x.*
        FROM ROWS FROM (
                 jsonb_to_recordset(p_events)
                 AS (id text, name text, data jsonb, "user" jsonb, ts bigint, v text, external_id text,
                     dedupe_key text, sessions jsonb)
             ) WITH ORDINALITY AS x(id, name, data, "user", ts, v, external_id, dedupe_key, sessions, ord)
    ),
    fresh AS (
        SELECT i.* FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM pgqueue.events e WHERE e.id = i.id)
    ),
    first_ext AS (
        SELECT DISTINCT ON (k.key) f.id, k.key
        FROM fresh f CROSS JOIN LATERAL (SELECT coalesce(f.dedupe_key, f.external_id) AS key) k
        WHERE f.external_id IS NOT NULL
        ORDER BY k.key, f.ord
    ),
    ded AS (
        INSERT INTO pgqueue.event_dedupe AS d (external_id, event_id, expires_at)
        SELECT fe.key, fe.id, now() + interval '24 hours' FROM first_ext fe
        ON CONFLICT (external_id) DO UPDATE
            SET event_id = excluded.event_id, expires_at = excluded.expires_at
            WHERE d.expires_at <= now()
        RETURNING d.event_id
    ),
    ins AS (
        INSERT INTO pgqueue.events (id, name, data, "user", ts, v, external_id, sessions, skip_reason)
        SELECT f.id, f.name, f.data, f."user", f.ts, f.v, f.external_id, nullif(f.sessions, 'null'),
               CASE WHEN f.external_id IS NOT NULL AND f.id NOT IN (SELECT event_id FROM ded)
                    THEN 'duplicate event id: an event with this id was received in the last 24 hours' END
        FROM fresh f
        ON CONFLICT (id) DO NOTHING
        RETURNING id, skip_reason
    ),
    inbox AS (
        INSERT INTO pgqueue.event_inbox (event_id)
        SELECT ins.id FROM ins JOIN input USING (id)
        WHERE ins.skip_reason IS NULL
        ORDER BY input.ord
        RETURNING 1
    )
    SELECT count(*) INTO queued FROM inbox;

    IF queued > 0 THEN
        PERFORM pg_notify('pgqueue_events', '');
    END IF;
    RETURN queued;
END
$$;

-- pgqueue.run_create_v1: create runs and their first call item. p_runs is a JSON array of
-- {id, function_id, event_id, event_ids, max_attempts} plus optional flow control:
-- ckeys/climits (concurrency keys), priority_s, throttle_key/throttle (GCRA on the start) and
-- delay_s (debounce and batch runs wait). Wakes the workers once.
CREATE OR REPLACE FUNCTION pgqueue.run_create_v1(p_runs jsonb)
RETURNS integer
LANGUAGE plpgsql  -- not sql: v2 is defined further down, and plpgsql resolves it when called
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pgqueue.run_create_v2(p_runs);  -- v2 takes v1's input (its extra fields are optional)
END
$$;

-- pgqueue.run_create_v2: as run_create_v1, plus correlation_id (a run started by step.invoke) and
-- replay_of (a replay) on each run, and the pins of events over an hour older than the run. Every
-- way of starting a run goes through this function, after
-- pgqueue/runner/starting.py has taken the target function's flow-control decisions.
CREATE OR REPLACE FUNCTION pgqueue.run_create_v2(p_runs jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    created integer;
    v_functions uuid[];
BEGIN
    WITH input AS (
        SELECT * FROM jsonb_to_recordset(p_runs)
            AS x(id text, function_id uuid, event_id text, event_ids text[], max_attempts integer,
                 ckeys text[], climits integer[], priority_s integer, throttle_key text, throttle jsonb,
                 delay_s double precision, correlation_id text, replay_of text)
    ),
    r AS (
        INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, max_attempts, ckeys, climits, priority_s,
                                  correlation_id, replay_of)
        SELECT id, function_id, event_id, event_ids, max_attempts, coalesce(ckeys, '{}'), coalesce(climits, '{}'),
               coalesce(priority_s, 0), correlation_id, replay_of
        FROM input
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ),
    pins AS (
        -- An event over an hour older than its new run (a replay, a runner catching up) may be in a
        -- partition that expires first: the run pins it (sql/functions/history.sql).
        INSERT INTO pgqueue.event_pins (event_id, run_id)
        SELECT e.eid, i.id FROM input i JOIN r USING (id) CROSS JOIN LATERAL unnest(i.event_ids) AS e(eid)
        WHERE e.eid < (SELECT pgqueue.ulid_bound_v1(now() - interval '1 hour'))
        ON CONFLICT DO NOTHING
    ),
    items AS (
        INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, ckeys, climits,
                                         priority_s, throttle_key, throttle, run_at)
        SELECT i.id, i.function_id, 'call', 'step', i.max_attempts, coalesce(i.ckeys, '{}'), coalesce(i.climits, '{}'),
               coalesce(i.priority_s, 0), i.throttle_key, i.throttle,
               now() + make_interval(secs => coalesce(i.delay_s, 0))
        FROM input i JOIN r USING (id)
        RETURNING function_id
    )
    SELECT count(*), coalesce(array_agg(items.function_id), '{}') INTO created, v_functions FROM items;
    PERFORM pgqueue.run_counts_add_v1(v_functions, array_fill('created'::text, ARRAY[created]),
                                      array_fill(now(), ARRAY[created]), NULL);

    IF created > 0 THEN
        PERFORM pg_notify('pgqueue_queue', '');
    END IF;
    RETURN created;
END
$$;
