-- pgqueue.claim_v1: lease up to p_limit due queue items for one worker, with flow control.
--
-- Fairness: candidates are taken round-robin across functions (the 1st due item of every
-- function, then the 2nd, ...), so one function with a deep backlog cannot delay another's work
-- by more than one claim round. Within a function, items go by sort_at (run_at - priority).
-- Concurrency: for each of an item's keys, the key is locked with pg_try_advisory_xact_lock (a
-- key busy in another claim is skipped this round) and the leased items holding it are counted
-- once per claim; an item over a limit is parked (blocked) on that key.
-- Default bound: a function's items are admitted while fewer than p_fn_default_limit of its
-- items are leased (counted once per claim; not serialised, so concurrent claims may overshoot it by
-- at most their batch sizes: it is a guard against runaway fan-out, not an exact limit).
-- Throttle: the first call of a run with a throttle key must pass GCRA; otherwise its run_at
-- moves to when it may start (delayed, never dropped).
-- Each lease (token + expiry from the database clock) is committed before any work starts.
DROP FUNCTION IF EXISTS pgqueue.claim_v1(text, integer, integer);
CREATE OR REPLACE FUNCTION pgqueue.claim_v1(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer DEFAULT 1000)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off  -- the planner's row estimates for a deep queue would buy ~15 ms of JIT per claim
AS $$
DECLARE
    v_now      timestamptz := now();
    v_lease    interval := make_interval(secs => p_lease_ms / 1000.0);
    cand       record;
    counts     jsonb := '{}'::jsonb;   -- key -> leased count (this claim's view, kept current)
    locked     jsonb := '{}'::jsonb;   -- key -> true when we hold its advisory lock, false if busy
    admitted   integer := 0;
    i          integer;
    k          text;
    n          integer;
    over_key   text;
    busy       boolean;
    wait_s     double precision;
    ids        bigint[] := '{}';
    v_keys     text[];
BEGIN
    -- Concurrency keys, in bulk: lock the keys of the items most likely to be admitted now, then
    -- count their leased items in one indexed query (locks first, so the counts are current).
    -- Keys this guess misses are locked and counted one by one in the loop below.
    -- (The first p_limit due items only: a bounded index scan however deep the queue is.)
    SELECT coalesce(array_agg(DISTINCT k.key), '{}') INTO v_keys
    FROM (SELECT q0.ckeys FROM pgqueue.queue_items q0
          WHERE q0.state = 'available' AND NOT q0.blocked AND q0.sort_at <= v_now AND q0.run_at <= v_now
          ORDER BY q0.sort_at, q0.id LIMIT p_limit) c
    CROSS JOIN LATERAL unnest(c.ckeys) AS k(key);
    IF cardinality(v_keys) > 0 THEN
        SELECT jsonb_object_agg(k.key, pg_try_advisory_xact_lock(hashtextextended(k.key, 0)))
        INTO locked FROM unnest(v_keys) AS k(key);
        v_keys := ARRAY(SELECT k.key FROM unnest(v_keys) AS k(key) WHERE (locked ->> k.key)::boolean);
        SELECT counts || coalesce(jsonb_object_agg(z.key, 0), '{}'::jsonb) INTO counts FROM unnest(v_keys) AS z(key);
        SELECT counts || coalesce(jsonb_object_agg(x.key, x.n), '{}'::jsonb) INTO counts FROM (
            SELECT k.key, count(*) AS n
            FROM pgqueue.queue_items l CROSS JOIN LATERAL unnest(l.ckeys) AS k(key)
            WHERE l.state = 'leased' AND l.ckeys && v_keys AND k.key = ANY (v_keys)
            GROUP BY k.key
        ) x;
    END IF;

    FOR cand IN
        SELECT c.id, c.function_id, c.ckeys, c.climits, c.throttle_key, c.throttle
        FROM pgqueue.functions f
        CROSS JOIN LATERAL (
            SELECT q.*, row_number() OVER (ORDER BY q.sort_at, q.id) AS ord
            FROM (
                SELECT q1.id, q1.function_id, q1.ckeys, q1.climits, q1.throttle_key, q1.throttle, q1.sort_at
                FROM pgqueue.queue_items q1
                WHERE q1.function_id = f.id AND q1.state = 'available' AND NOT q1.blocked
                  AND q1.sort_at <= v_now AND q1.run_at <= v_now
                ORDER BY q1.sort_at, q1.id
                LIMIT p_limit
                FOR UPDATE SKIP LOCKED
            ) q
        ) c
        ORDER BY c.ord, c.sort_at, c.id
    LOOP
        EXIT WHEN admitted >= p_limit;
        over_key := NULL;
        busy := false;
        k := 'fn-default:' || cand.function_id::text;
        IF NOT counts ? k THEN
            SELECT count(*) INTO n FROM pgqueue.queue_items l
            WHERE l.function_id = cand.function_id AND l.state = 'leased';
            counts := counts || jsonb_build_object(k, n);
        END IF;
        CONTINUE WHEN (counts ->> k)::integer >= p_fn_default_limit;
        IF cardinality(cand.ckeys) > 0 THEN
            FOR i IN 1 .. cardinality(cand.ckeys) LOOP
                k := cand.ckeys[i];
                IF NOT locked ? k THEN
                    locked := locked || jsonb_build_object(k, pg_try_advisory_xact_lock(hashtextextended(k, 0)));
                END IF;
                IF NOT (locked ->> k)::boolean THEN
                    busy := true;      -- another claim is admitting on this key right now
                    EXIT;
                END IF;
                IF NOT counts ? k THEN
                    SELECT count(*) INTO n FROM pgqueue.queue_items l
                    WHERE l.state = 'leased' AND l.ckeys @> ARRAY[k];
                    counts := counts || jsonb_build_object(k, n);
                END IF;
                IF (counts ->> k)::integer >= cand.climits[i] THEN
                    over_key := k;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        CONTINUE WHEN busy;
        IF over_key IS NOT NULL THEN
            UPDATE pgqueue.queue_items SET blocked = true, blocked_key = over_key WHERE queue_items.id = cand.id;
            CONTINUE;
        END IF;
        IF cand.throttle_key IS NOT NULL THEN
            wait_s := pgqueue.throttle_admit_v2(
                cand.throttle_key, (cand.throttle ->> 'limit')::integer, (cand.throttle ->> 'period_ms')::bigint,
                coalesce((cand.throttle ->> 'burst')::integer, 1), v_now);
            IF wait_s > 0 THEN
                UPDATE pgqueue.queue_items SET run_at = v_now + make_interval(secs => wait_s)
                WHERE queue_items.id = cand.id;
                CONTINUE;
            END IF;
        END IF;
        k := 'fn-default:' || cand.function_id::text;
        counts := jsonb_set(counts, ARRAY[k], to_jsonb((counts ->> k)::integer + 1));
        IF cardinality(cand.ckeys) > 0 THEN
            FOR i IN 1 .. cardinality(cand.ckeys) LOOP
                k := cand.ckeys[i];
                counts := jsonb_set(counts, ARRAY[k], to_jsonb((counts ->> k)::integer + 1));
            END LOOP;
        END IF;
        ids := ids || cand.id;
        admitted := admitted + 1;
    END LOOP;

    RETURN QUERY
    UPDATE pgqueue.queue_items q
    SET state = 'leased',
        lease_token = gen_random_uuid(),
        lease_expires_at = v_now + v_lease,
        leased_by = p_worker,
        leased_at = v_now,
        throttle_key = NULL
    WHERE q.id = ANY(ids)
    RETURNING q.id, q.run_id, q.function_id, q.kind, q.step_id, q.step_name,
              q.attempt, q.max_attempts, q.lease_token, q.run_at;
END
$$;

-- pgqueue.claim_v2: claim_v1, and the runs whose first call it leased are marked running in the
-- same transaction (so starting a run costs no commit of its own); run_started says which.
-- A run row locked elsewhere right now (a cancel) is skipped here and marked by the run context
-- query instead. Runs are locked after items here, so SKIP LOCKED keeps this from ever waiting.
CREATE OR REPLACE FUNCTION pgqueue.claim_v2(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer DEFAULT 1000)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz, run_started boolean
)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    WITH claimed AS MATERIALIZED (
        SELECT * FROM pgqueue.claim_v1(p_worker, p_limit, p_lease_ms, p_fn_default_limit)
    ), starting AS (
        SELECT r.id FROM pgqueue.runs r
        WHERE r.id = ANY (ARRAY(SELECT c.run_id FROM claimed c WHERE c.kind = 'call')) AND r.status = 'queued'
        ORDER BY r.id
        FOR UPDATE SKIP LOCKED
    ), started AS (
        UPDATE pgqueue.runs r SET status = 'running', started_at = now()
        FROM starting s WHERE r.id = s.id
        RETURNING r.id
    )
    SELECT c.id, c.run_id, c.function_id, c.kind, c.step_id, c.step_name, c.attempt, c.max_attempts,
           c.lease_token, c.run_at, c.run_id IN (SELECT started.id FROM started)
    FROM claimed c
$$;

-- pgqueue.finish_timeouts_v1: schedule timeouts.finish for runs that just started: a $finish-timeout
-- item due the function's finish_timeout_ms from now. Called in the statement that starts the runs
-- (claim_v3, the run_context query), so no crash in between can lose it. Returns how many.
CREATE OR REPLACE FUNCTION pgqueue.finish_timeouts_v1(p_run_ids text[])
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH scheduled AS (
        INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, step_name, max_attempts, run_at,
                                         priority_s)
        SELECT r.id, r.function_id, 'timeout', '$finish-timeout', 'timeouts.finish', 1,
               now() + make_interval(secs => f.finish_timeout_ms / 1000.0), r.priority_s
        FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
        WHERE r.id = ANY (p_run_ids) AND f.finish_timeout_ms IS NOT NULL
        ON CONFLICT (run_id, step_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM scheduled
$$;

-- pgqueue.claim_v3: claim_v2, and a started run's timeouts.finish is scheduled in the same
-- transaction (finish_timeouts_v1), so a worker that dies right after its claim cannot lose it.
CREATE OR REPLACE FUNCTION pgqueue.claim_v3(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer DEFAULT 1000)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz, run_started boolean
)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    WITH claimed AS MATERIALIZED (
        SELECT * FROM pgqueue.claim_v2(p_worker, p_limit, p_lease_ms, p_fn_default_limit)
    ), timed AS MATERIALIZED (
        SELECT pgqueue.finish_timeouts_v1(ARRAY(SELECT c.run_id FROM claimed c WHERE c.run_started)) AS n
    )
    SELECT c.id, c.run_id, c.function_id, c.kind, c.step_id, c.step_name, c.attempt, c.max_attempts,
           c.lease_token, c.run_at, c.run_started
    FROM claimed c CROSS JOIN timed
$$;
