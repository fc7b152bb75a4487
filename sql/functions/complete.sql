-- The executor's hot path in one round trip. A worker hands over a batch of finished calls (its
-- group commit: every call that ended while the previous batch was being written); each element
-- is applied exactly as pgqueue/executor/apply.py applies the same outcome, in one transaction:
--
--   kind 'step'  the SDK answered one step's output (206 with one StepRun/Step): the output is
--                memoised with the call's start (first stored output wins), and the run's next
--                discovery call queued once nothing else of it is pending (the item itself, when it
--                was that call), or made at once by the same worker on the same lease (`continued`,
--                with the run's new context);
--   kind 'done'  the function returned (200, or 206 with one RunComplete): the run completes, its
--                items, pauses and singleton slot go, inngest/function.finished is emitted.
--
-- Every element starts with the fencing every apply starts with: lock the run, then the item only
-- while it is still leased with this worker's token. Results per item:
--   applied | finished  written;
--   lost                the lease is gone (a rescuer or a cancel won): nothing written;
--   discarded           the run had already ended: the item is dropped, the attempt recorded;
--   fallback            nothing written; the caller applies it through the general path, which
--                       owns the rare cases (a step stored already, the step or state limit).
-- A run named by more than one element of a batch where one of them ends it goes to `fallback`
-- too, so the general path decides what happens first. Set-based: a handful of statements per
-- batch, whatever its size; the runs are locked in id order, so two batches never deadlock.


-- pgqueue.finish_heard_v1: does anything listen for a run's inngest/function.finished (.failed,
-- .cancelled)? An invoke waiting for it (the run has a correlation id), a function triggered by
-- one of those names (exactly or by a wildcard prefix), or a waitForEvent / cancelOn pause on one
-- of them (pause_paths lists every name pauses were ever created for). Otherwise the event is not
-- written: a no-op run costs no event, no inbox row and no runner round.
CREATE OR REPLACE FUNCTION pgqueue.finish_heard_v1(p_correlation_id text)
RETURNS boolean
LANGUAGE plpgsql  -- a cached plan: asked for every run that ends (a SQL function is planned each call)
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_correlation_id IS NOT NULL
        OR EXISTS (
            SELECT 1 FROM pgqueue.function_triggers t JOIN pgqueue.functions f ON f.id = t.function_id
            WHERE f.archived_at IS NULL
              AND (t.event_name IN ('inngest/function.finished', 'inngest/function.failed',
                                    'inngest/function.cancelled')
                   OR (t.name_prefix IS NOT NULL
                       AND (starts_with('inngest/function.finished', t.name_prefix)
                            OR starts_with('inngest/function.failed', t.name_prefix)
                            OR starts_with('inngest/function.cancelled', t.name_prefix)))))
        OR EXISTS (
            SELECT 1 FROM pgqueue.pause_paths p
            WHERE p.event_name IN ('inngest/function.finished', 'inngest/function.failed',
                                   'inngest/function.cancelled'));
END
$$;


CREATE OR REPLACE FUNCTION pgqueue.complete_v2(p_batch jsonb, p_max_steps integer, p_max_state_bytes bigint)
RETURNS TABLE (item_id bigint, result text, context jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- custom plans of these batch statements cost more than they win
-- Every statement joins the batch (a few to a few hundred calls) to big tables by key: probing
-- their indexes is always the plan. The planner guesses 100 rows for jsonb_to_recordset and keeps
-- the generic plan until the tables are analysed again, so it scanned all of runs (the fence, the
-- classification) and hashed all of steps (the "stored already" check) on every batch, made for
-- the tables' size when the plan was made.
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_held bigint[];
    v_class jsonb;
    v_race text[];
    v_reused bigint[];
    v_continued bigint[];
    v_ended integer;
BEGIN
    -- Fencing, in the lock order used everywhere: the runs, then the items still leased with the
    -- caller's tokens.
    PERFORM 1 FROM pgqueue.runs r
    WHERE r.id IN (SELECT x.run_id FROM jsonb_to_recordset(p_batch) AS x(run_id text))
    ORDER BY r.id FOR UPDATE;
    -- Each item by its primary key, in id order (a subquery with LIMIT is never flattened, and the
    -- state test is not pushed into it): a join walked every leased item and read the batch again
    -- for each (`state = 'leased'` matches a partial index the planner preferred). Only our lease
    -- has our token, so the lock never waits on another worker's item.
    SELECT coalesce(array_agg(h.id ORDER BY h.id), '{}') INTO v_held FROM (
        SELECT q.id, q.state
        FROM (SELECT b.item_id, b.lease_token
              FROM jsonb_to_recordset(p_batch) AS b(item_id bigint, lease_token uuid)
              ORDER BY b.item_id) x
        CROSS JOIN LATERAL (
            SELECT q1.id, q1.state FROM pgqueue.queue_items q1
            WHERE q1.id = x.item_id AND q1.lease_token = x.lease_token
            LIMIT 1 FOR UPDATE
        ) q
    ) h
    WHERE h.state = 'leased';
    -- Runs whose finished call was a parallelMode "race" step: their next discovery call is queued
    -- at once, even while sibling steps are pending (as pgqueue/runs/transitions.py continue_run does).
    SELECT coalesce(array_agg(DISTINCT q.run_id), '{}') INTO v_race
    FROM pgqueue.queue_items q WHERE q.id = ANY (v_held) AND q.race;

    SELECT coalesce(jsonb_object_agg(c.item_id::text, c.class), '{}') INTO v_class FROM (
        SELECT x.item_id,
               CASE WHEN r.id IS NULL OR NOT (x.item_id = ANY (v_held)) THEN 'lost'
                    WHEN r.status NOT IN ('queued', 'running') THEN 'discarded'
                    WHEN count(*) OVER per_run > 1 AND bool_or(x.kind = 'done') OVER per_run THEN 'fallback'
                    WHEN x.kind = 'step' AND (
                         count(*) OVER per_step > 1
                         OR t.n + count(*) OVER per_run_ordered > p_max_steps
                         OR t.size + sum(octet_length(x.memo::text)) OVER per_run_ordered > p_max_state_bytes
                         OR st.stored)
                         THEN 'fallback'
                    ELSE x.kind END AS class
        FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text, kind text, step_id text, memo jsonb)
        LEFT JOIN pgqueue.runs r ON r.id = x.run_id
        -- the run's step count and state size so far: its steps' (a probe of steps_pkey per run)
        CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(s.size), 0) AS size
                            FROM pgqueue.steps s WHERE s.run_id = x.run_id) t
        -- the step stored already? A probe per element: as an EXISTS in the CASE the plan became a
        -- hashed subplan that read every stored step of every partition on each batch
        LEFT JOIN LATERAL (SELECT true AS stored FROM pgqueue.steps s
                           WHERE s.run_id = x.run_id AND s.step_id = x.step_id LIMIT 1) st ON true
        WINDOW per_run AS (PARTITION BY x.run_id),
               per_step AS (PARTITION BY x.run_id, x.step_id),
               per_run_ordered AS (PARTITION BY x.run_id ORDER BY x.item_id)
    ) c;

    -- Calls whose run had ended: the item goes, the attempt is recorded as discarded.
    DELETE FROM pgqueue.queue_items q USING jsonb_to_recordset(p_batch) AS x(item_id bigint)
    WHERE q.id = x.item_id AND v_class ->> x.item_id::text = 'discarded';
    -- A successful call is recorded on what it produced (the step, or the run's value: see
    -- pgqueue.calls), so only a discarded call gets an attempts row here.
    INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, started_at)
    SELECT x.run_id, x.item_id, x.item_step_id, x.attempt, 'discarded', x.started_at
    FROM jsonb_to_recordset(p_batch)
         AS x(item_id bigint, run_id text, item_step_id text, attempt integer, started_at timestamptz)
    WHERE v_class ->> x.item_id::text = 'discarded'
    ORDER BY x.item_id;

    UPDATE pgqueue.runs r SET request_version = v.request_version
    FROM (SELECT DISTINCT ON (x.run_id) x.run_id, x.request_version
          FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text, request_version integer)
          WHERE x.request_version IS NOT NULL AND v_class ->> x.item_id::text IN ('step', 'done')
          ORDER BY x.run_id, x.item_id DESC) v
    WHERE r.id = v.run_id AND r.request_version <> v.request_version;

    -- Steps: memoise, and queue the run's next discovery call once nothing else of it is pending
    -- (run-level timers, $start-timeout and $finish-timeout, do not hold it back), or at once after a
    -- race step. A discovery call that was the run's only pending work goes back to the queue as
    -- that next call (one update instead of a delete and an insert: half the queue's writes for a
    -- run of sequential steps); any other item is deleted.
    -- The run's discovery item, when it was the run's only pending work, is the run's next call:
    -- it continues on its lease when the worker asked for that (its element's `may_continue`), the
    -- call went through on its first attempt and the function is not paused, the worker calling
    -- the app again at once with the run's new context (no write, no claim, no wake-up: a run's
    -- steps follow one another, and started runs finish first); otherwise it goes back to the queue
    -- (one update instead of a delete and an insert).
    SELECT coalesce(array_agg(q.id), '{}'), coalesce(array_agg(q.id) FILTER (WHERE q.go_on), '{}')
    INTO v_reused, v_continued FROM (
        SELECT q1.id, coalesce(x.may_continue, false) AND q1.attempt = 0 AND f.paused_at IS NULL AS go_on
        FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, may_continue boolean)
        CROSS JOIN LATERAL (SELECT * FROM pgqueue.queue_items q0 WHERE q0.id = x.item_id LIMIT 1) q1
        LEFT JOIN pgqueue.functions f ON f.id = q1.function_id
        WHERE v_class ->> x.item_id::text = 'step' AND q1.kind = 'call' AND q1.step_id = 'step'
          AND NOT EXISTS (SELECT 1 FROM pgqueue.queue_items o
                          WHERE o.run_id = q1.run_id AND o.id <> q1.id
                            AND NOT (o.kind = 'timeout' AND starts_with(o.step_id, '$')))
        ORDER BY q1.id
    ) q;
    v_reused := ARRAY(SELECT u FROM unnest(v_reused) AS u WHERE u <> ALL (v_continued));
    -- The steps, each with the call that produced it; a continued item's calls are not told apart
    -- by item (they read as item NULL in pgqueue.calls).
    INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt, started_at, call_item_id, call_planned)
    SELECT x.run_id, x.step_id, x.step_name, 'StepRun', x.memo, x.attempt, x.started_at,
           CASE WHEN x.item_id = ANY (v_continued) THEN NULL ELSE x.item_id END,
           nullif(x.item_step_id <> 'step', false)
    FROM jsonb_to_recordset(p_batch)
         AS x(item_id bigint, run_id text, step_id text, step_name text, memo jsonb, attempt integer,
              started_at timestamptz, item_step_id text)
    WHERE v_class ->> x.item_id::text = 'step'
    ORDER BY x.item_id;
    -- A new id: each use of the item is its own call in the history (its attempts group by item).
    UPDATE pgqueue.queue_items q
    SET id = DEFAULT, state = 'available', run_at = now(), attempt = 0, lease_token = NULL, lease_expires_at = NULL,
        leased_by = NULL, leased_at = NULL, last_error = NULL, interrupts = 0, race = false,
        throttle_key = NULL, throttle = NULL, step_name = NULL, created_at = now()
    WHERE q.id = ANY (v_reused);
    DELETE FROM pgqueue.queue_items q USING jsonb_to_recordset(p_batch) AS x(item_id bigint)
    WHERE q.id = x.item_id AND v_class ->> x.item_id::text = 'step' AND NOT q.id = ANY (v_reused)
      AND NOT q.id = ANY (v_continued);
    INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, ckeys, climits, priority_s)
    SELECT r.id, r.function_id, 'call', 'step', r.max_attempts, r.ckeys, r.climits, r.priority_s
    FROM pgqueue.runs r
    WHERE r.id IN (SELECT x.run_id FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text)
                   WHERE v_class ->> x.item_id::text = 'step')
      AND (r.id = ANY (v_race)
           OR NOT EXISTS (SELECT 1 FROM pgqueue.queue_items q
                          WHERE q.run_id = r.id AND NOT (q.kind = 'timeout' AND starts_with(q.step_id, '$'))))
    ORDER BY r.id
    ON CONFLICT (run_id, step_id) DO NOTHING;
    IF FOUND OR cardinality(v_reused) > 0 THEN
        PERFORM pg_notify('pgqueue_queue', '');
    END IF;

    -- Return values: the run completes, its items, pauses and singleton slot go.
    WITH ended AS (
        UPDATE pgqueue.runs r
        SET status = 'completed', output = nullif(x.output, 'null'::jsonb), error = NULL, ended_at = now(),
            started_at = coalesce(r.started_at, now()), final_call_started_at = x.started_at,
            final_call_attempt = x.attempt, final_call_item_id = x.item_id
        FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text, output jsonb, started_at timestamptz,
                                              attempt integer)
        WHERE r.id = x.run_id AND v_class ->> x.item_id::text = 'done'
        RETURNING r.id, r.function_id, r.created_at, r.ended_at
    )
    -- their end recorded once for the batch (live_runs, run_counts)
    SELECT pgqueue.runs_ended_v1(array_agg(e.id), array_agg(e.function_id), array_agg('completed'::text),
                                 array_agg(e.created_at), array_agg(e.ended_at))
    INTO v_ended FROM ended e;
    DELETE FROM pgqueue.queue_items q USING jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text)
    WHERE q.run_id = x.run_id AND v_class ->> x.item_id::text = 'done';
    DELETE FROM pgqueue.pauses p USING jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text)
    WHERE p.run_id = x.run_id AND v_class ->> x.item_id::text = 'done';
    DELETE FROM pgqueue.singletons s USING jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text)
    WHERE s.run_id = x.run_id AND v_class ->> x.item_id::text = 'done';

    -- inngest/function.finished, shaped as pgqueue/runs/transitions.py emit_finished shapes it (the ids
    -- come from the caller), into the runner's inbox; not for runs triggered by such an event, and
    -- only when something listens (pgqueue.finish_heard_v1).
    WITH finished AS (
        SELECT x.event_id, x.event_ts, ev.all_events,
               jsonb_build_object(
                   'function_id', coalesce(f.slug, r.function_id::text),
                   'run_id', r.id,
                   'event', ev.all_events -> 0,
                   'events', ev.all_events,
                   '_inngest', jsonb_build_object('status', 'Completed'),
                   'result', nullif(x.output, 'null'::jsonb))
               || CASE WHEN r.correlation_id IS NULL THEN '{}'::jsonb
                       ELSE jsonb_build_object('correlation_id', r.correlation_id) END AS data
        FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text, output jsonb, event_id text, event_ts bigint)
        JOIN pgqueue.runs r ON r.id = x.run_id
        LEFT JOIN pgqueue.functions f ON f.id = r.function_id
        CROSS JOIN LATERAL (
            SELECT coalesce(jsonb_agg(
                       jsonb_build_object('id', coalesce(e.external_id, e.id), 'name', e.name, 'data', e.data,
                                          'user', coalesce(e."user", '{}'::jsonb), 'ts', e.ts)
                       || CASE WHEN e.v IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('v', e.v) END
                       || CASE WHEN e.sessions IS NULL THEN '{}'::jsonb
                               ELSE jsonb_build_object('meta', jsonb_build_object('sessions', e.sessions)) END
                       ORDER BY array_position(r.event_ids, e.id)), '[]'::jsonb) AS all_events
            FROM pgqueue.events e WHERE e.id = ANY (r.event_ids)
        ) ev
        -- who listens is asked once per statement, and only when a run ends (an InitPlan): per run
        -- it read every function's triggers again for each
        WHERE v_class ->> x.item_id::text = 'done'
          AND (r.correlation_id IS NOT NULL OR (SELECT pgqueue.finish_heard_v1(NULL)))
    ), stored AS (
        INSERT INTO pgqueue.events (id, name, data, ts)
        SELECT finished.event_id, 'inngest/function.finished', finished.data, finished.event_ts FROM finished
        WHERE coalesce(finished.all_events -> 0 ->> 'name', '') NOT IN
              ('inngest/function.finished', 'inngest/function.failed', 'inngest/function.cancelled')
        ORDER BY finished.event_id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    INSERT INTO pgqueue.event_inbox (event_id) SELECT stored.id FROM stored ORDER BY stored.id;
    IF FOUND THEN
        PERFORM pg_notify('pgqueue_events', '');
    END IF;

    -- A continued call's run context is read after this batch's writes, as the claim reads it.
    RETURN QUERY
    SELECT x.item_id,
           CASE WHEN x.item_id = ANY (v_continued) THEN 'continued'
                ELSE CASE v_class ->> x.item_id::text WHEN 'step' THEN 'applied' WHEN 'done' THEN 'finished'
                          ELSE v_class ->> x.item_id::text END END,
           CASE WHEN x.item_id = ANY (v_continued) THEN pgqueue.run_context_v1(x.run_id) END
    FROM jsonb_to_recordset(p_batch) AS x(item_id bigint, run_id text);
END
$$;

-- pgqueue.complete_v1: complete_v2 for workers of the previous release (no element asks to
-- continue, so no call does).
CREATE OR REPLACE FUNCTION pgqueue.complete_v1(p_batch jsonb, p_max_steps integer, p_max_state_bytes bigint)
RETURNS TABLE (item_id bigint, result text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.item_id, c.result
    FROM pgqueue.complete_v2((SELECT coalesce(jsonb_agg(e - 'may_continue'), '[]'::jsonb)
                              FROM jsonb_array_elements(p_batch) AS e),
                             p_max_steps, p_max_state_bytes) c;
END
$$;
