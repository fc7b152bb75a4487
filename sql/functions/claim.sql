-- pgqueue.claim_lease_v2: lease up to p_limit due queue items for one worker, with flow control.
-- What every claim version does (claim_lease_v1 and claim_v1..claim_v4 on it; claim_v5).
--
-- Cost: the claim locks only the rows it takes (leases, parks or delays), and reads about
-- p_limit items however many functions have work. Candidates are read first, without locks, in
-- claim order; then they are locked in that order, as many at a time as are still wanted, with
-- SKIP LOCKED and the due conditions checked again on the locked row. Only when candidates are let
-- go (another claim holds them, flow control holds them back) is the next batch locked, and only
-- when a round's candidates run out are more read, from the functions that may have more.
-- (Locking p_limit rows of every function and letting most go cost 9,950 row locks and 637 kB of
-- WAL for a claim of 50 with 200 functions.) The one exception: a row whose concurrency key
-- another claim is admitting on right now is locked and let go.
-- Fairness: candidates are taken round-robin across functions: the oldest due item of every
-- function (oldest first), then the second, ... So with fewer functions with due work than p_limit,
-- one function with a deep backlog cannot delay another's work by more than one claim round.
-- With more, a claim takes the oldest item of p_limit of them, in function order from where the
-- previous claim's stride ended: every function with due work is served within
-- ceil(functions / p_limit) claims, and a claim reads about p_limit functions instead of all.
-- Within a function, items go by sort_at (run_at - priority).
-- Bounds: after its first round (about p_limit items), a claim reads at most 4 * p_limit more
-- items, so up to three concurrent claims that read the same oldest items and find them locked by
-- an earlier one still fill their batch, and a backlog that flow control holds back is parked a
-- few batches at a time.
-- Paused functions (p_hold_paused, claim_v4): not read at all, so their queued work stays where
-- it is; the flag is read once per function, never per item (see function_pause_v1).
-- Concurrency: for each of an item's keys, the key is locked with pg_try_advisory_xact_lock (a
-- key busy in another claim is skipped this round) and the leased items holding it are counted
-- once per claim; an item over a limit is parked (blocked) on that key, and for each of its other
-- keys with a free slot the next item parked there is unparked (the wake-up it may have had).
-- A parked item is unparked when a slot of its key frees (queue_items_unblock_v1, which waits for
-- the claim's key lock, so no wake-up falls between a count and a park).
-- Default bound: a function's items are admitted while fewer than p_fn_default_limit of its
-- items are leased (counted once per claim; not serialised, so concurrent claims may overshoot it by
-- at most their batch sizes: it is a guard against runaway fan-out, not an exact limit). While
-- fewer than p_fn_default_limit - p_limit items are leased in all, no function is counted.
-- Throttle: the first call of a run with a throttle key must pass GCRA (throttle_admit_v2);
-- otherwise its run_at moves to when it may start (delayed, never dropped).
-- App caps (p_app_caps, claim_v5; NULL: none): the worker's adaptive concurrency per app
-- (pgqueue/queue/adaptive.py). {app id: n} leases at most n more calls of that app's functions, an
-- app not listed at most p_app_default_cap (NULL: no cap). An app at its cap is not read from
-- (its functions leave the rounds, timers included: they wait for the app's next free slot, one
-- call's time at most); its items stay available, neither parked nor delayed. Caps come on top of
-- the function limits above, which hold as ever.
-- Each lease (token + expiry from the database clock) is committed before any work starts.
CREATE OR REPLACE FUNCTION pgqueue.claim_lease_v2(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer, p_hold_paused boolean,
    p_app_caps jsonb, p_app_default_cap integer)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off  -- the planner's row estimates for a deep queue would buy ~15 ms of JIT per claim
-- The candidates (at most 5 * p_limit ids) are locked by primary key: a kept plan that hashed
-- them against the available items read every due item of the queue on each claim (1 ms per
-- claim with 3,000 queued; plpgsql keeps a plan until the table is analysed again).
SET enable_hashjoin = off
SET enable_mergejoin = off
-- ...and the leased items are updated by primary key: a kept plan made while the queue was a few
-- rows read all of it by sequential scan to update five (4,995 rows read per claim at 5,000 queued)
SET enable_seqscan = off
AS $$
DECLARE
    v_now      timestamptz := now();
    v_lease    interval := make_interval(secs => p_lease_ms / 1000.0);
    fns        uuid[];         -- the functions a round reads from
    considered bigint[] := '{}';  -- every item read so far (a later round reads past them)
    depth      integer;        -- items read per function in this round
    budget     integer := 4 * p_limit;  -- items a claim reads at most after its first round
    cands      bigint[];       -- the round's candidates in claim order (read, not locked)
    cand_fns   uuid[];         -- their functions
    keyed      boolean;        -- some candidate has concurrency keys
    pos        integer;        -- the next candidate to lock
    batch      bigint[];
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
    start      integer;
    row_limit  integer;        -- the first round's limit on items read when it cannot read them all
    bounded    boolean;        -- some function may reach p_fn_default_limit in this claim
    fn_app     jsonb;          -- function id -> app id (with app caps)
    app_left   jsonb := '{}'::jsonb;  -- app id -> calls it may still lease (with app caps)
    full_apps  text[] := '{}'; -- apps at their cap
    v_app      text;
    v_cap      integer;
BEGIN
    SELECT coalesce(array_agg(f.id ORDER BY f.id), '{}'),
           coalesce(jsonb_object_agg(f.id::text, f.app_id::text), '{}'::jsonb)
    INTO fns, fn_app
    FROM pgqueue.functions f
    WHERE NOT (p_hold_paused AND f.paused_at IS NOT NULL)
      AND (p_app_caps IS NULL
           OR coalesce((p_app_caps ->> f.app_id::text)::integer, p_app_default_cap, 1) > 0);
    -- No function can reach the default bound while fewer than p_fn_default_limit - p_limit items
    -- are leased in all (the common case): then no function's leased items need counting.
    SELECT count(*) >= p_fn_default_limit - p_limit INTO bounded
    FROM (SELECT 1 FROM pgqueue.queue_items l WHERE l.state = 'leased'
          LIMIT greatest(p_fn_default_limit - p_limit, 0)) x;
    IF cardinality(fns) >= p_limit THEN
        -- At least as many functions as items wanted: the first round reads the oldest due item
        -- of each function in turn until it has p_limit of them, starting where the previous
        -- claim's stride ended (claim_rotation), so ceil(functions / p_limit) claims go round.
        start := 1 + (((nextval('pgqueue.claim_rotation') % cardinality(fns)) * p_limit) % cardinality(fns))::integer;
        fns := fns[start:] || fns[:start - 1];
        depth := 1;
        row_limit := p_limit;
    ELSE
        -- Fewer: the first round reads p_limit items spread over all of them.
        depth := ceil(p_limit::numeric / greatest(cardinality(fns), 1));
    END IF;

    WHILE admitted < p_limit AND cardinality(fns) > 0 AND depth > 0 AND budget > 0 LOOP
        -- One round: up to `depth` due items of each function not read yet, in claim order (the
        -- 1st of every function by age, then the 2nd, ...), and the functions whose read came back
        -- full, which may have more. (Read past `considered` rather than after a keyset: a row
        -- comparison's generic selectivity makes plpgsql's cached plan a bitmap scan and sort of
        -- all of a function's due items.)
        SELECT coalesce(array_agg(c.id ORDER BY c.ord, c.sort_at, c.id), '{}'),
               coalesce(array_agg(c.function_id ORDER BY c.ord, c.sort_at, c.id), '{}'),
               coalesce(bool_or(cardinality(c.ckeys) > 0), false),
               coalesce(array_agg(c.function_id) FILTER (WHERE c.ord = depth), '{}')
        INTO cands, cand_fns, keyed, fns
        FROM (
            -- a nested loop over the functions in array order, so row_limit ends the probing
            SELECT h.* FROM unnest(fns) AS f(fid)
            CROSS JOIN LATERAL (
                SELECT q.*, row_number() OVER (ORDER BY q.sort_at, q.id) AS ord
                FROM (
                    SELECT q1.id, q1.function_id, q1.ckeys, q1.sort_at
                    FROM pgqueue.queue_items q1
                    WHERE q1.function_id = f.fid AND q1.state = 'available' AND NOT q1.blocked
                      AND q1.sort_at <= v_now AND q1.run_at <= v_now AND q1.id <> ALL (considered)
                    ORDER BY q1.sort_at, q1.id
                    LIMIT depth
                ) q
            ) h
            LIMIT row_limit
        ) c;
        IF cardinality(considered) > 0 THEN  -- a later round
            budget := budget - cardinality(cands);
        END IF;
        row_limit := NULL;
        considered := considered || cands;

        pos := 1;
        WHILE admitted < p_limit AND pos <= cardinality(cands) LOOP
            -- Lock as many candidates as are still wanted, in claim order; a row another claim
            -- holds, or that is no longer due and available, is passed over.
            batch := cands[pos : pos + (p_limit - admitted) - 1];
            -- The batch's default bounds, counted in one query; its concurrency keys locked in
            -- bulk, then their leased items counted in one indexed query (locks first, so the
            -- counts are current). A key missed here is locked and counted on its own below.
            IF bounded THEN
                SELECT counts || coalesce(jsonb_object_agg('fn-default:' || x.fid::text, x.n), '{}'::jsonb)
                INTO counts
                FROM (
                    SELECT u.fid, (SELECT count(*) FROM pgqueue.queue_items l
                                   WHERE l.function_id = u.fid AND l.state = 'leased') AS n
                    FROM (SELECT DISTINCT c.fid FROM unnest(cand_fns[pos : pos + cardinality(batch) - 1]) AS c(fid)) u
                    WHERE NOT counts ? ('fn-default:' || u.fid::text)
                ) x;
            END IF;
            pos := pos + cardinality(batch);
            IF keyed THEN
                SELECT coalesce(array_agg(DISTINCT x.key), '{}') INTO v_keys
                FROM pgqueue.queue_items q CROSS JOIN LATERAL unnest(q.ckeys) AS x(key)
                WHERE q.id = ANY (batch) AND NOT locked ? x.key;
                IF cardinality(v_keys) > 0 THEN
                    SELECT locked || jsonb_object_agg(x.key, pg_try_advisory_xact_lock(hashtextextended(x.key, 0)))
                    INTO locked FROM unnest(v_keys) AS x(key);
                    v_keys := ARRAY(SELECT x.key FROM unnest(v_keys) AS x(key) WHERE (locked ->> x.key)::boolean);
                    SELECT counts || coalesce(jsonb_object_agg(z.key, 0), '{}'::jsonb) INTO counts
                    FROM unnest(v_keys) AS z(key);
                    SELECT counts || coalesce(jsonb_object_agg(x.key, x.n), '{}'::jsonb) INTO counts FROM (
                        SELECT k1.key, count(*) AS n
                        FROM pgqueue.queue_items l CROSS JOIN LATERAL unnest(l.ckeys) AS k1(key)
                        WHERE l.state = 'leased' AND cardinality(l.ckeys) > 0 AND l.ckeys && v_keys AND k1.key = ANY (v_keys)
                        GROUP BY k1.key
                    ) x;
                END IF;
            END IF;
            FOR cand IN
                SELECT q.id, q.function_id, q.kind, q.ckeys, q.climits, q.throttle_key, q.throttle
                FROM unnest(batch) WITH ORDINALITY AS b(id, n)
                JOIN pgqueue.queue_items q ON q.id = b.id
                WHERE q.state = 'available' AND NOT q.blocked AND q.sort_at <= v_now AND q.run_at <= v_now
                ORDER BY b.n
                FOR UPDATE OF q SKIP LOCKED
            LOOP
                over_key := NULL;
                busy := false;
                v_cap := NULL;
                IF p_app_caps IS NOT NULL AND cand.kind = 'call' THEN
                    v_app := fn_app ->> cand.function_id::text;
                    v_cap := coalesce((app_left ->> v_app)::integer, (p_app_caps ->> v_app)::integer, p_app_default_cap);
                    CONTINUE WHEN v_cap <= 0;
                END IF;
                k := 'fn-default:' || cand.function_id::text;
                IF bounded THEN
                    IF NOT counts ? k THEN
                        SELECT count(*) INTO n FROM pgqueue.queue_items l
                        WHERE l.function_id = cand.function_id AND l.state = 'leased';
                        counts := counts || jsonb_build_object(k, n);
                    END IF;
                    CONTINUE WHEN (counts ->> k)::integer >= p_fn_default_limit;
                END IF;
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
                            WHERE l.state = 'leased' AND cardinality(l.ckeys) > 0 AND l.ckeys @> ARRAY[k];
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
                    -- The item may have been unparked for a slot of one of its other keys (a run
                    -- limit and a key limit): that slot is still free, so the wake-up passes to the
                    -- next item parked on that key, else nothing would wake it until the rescuer.
                    FOR i IN 1 .. cardinality(cand.ckeys) LOOP
                        k := cand.ckeys[i];
                        CONTINUE WHEN k = over_key;
                        IF NOT locked ? k THEN
                            locked := locked || jsonb_build_object(k, pg_try_advisory_xact_lock(hashtextextended(k, 0)));
                        END IF;
                        CONTINUE WHEN NOT (locked ->> k)::boolean;
                        IF NOT counts ? k THEN
                            SELECT count(*) INTO n FROM pgqueue.queue_items l
                            WHERE l.state = 'leased' AND cardinality(l.ckeys) > 0 AND l.ckeys @> ARRAY[k];
                            counts := counts || jsonb_build_object(k, n);
                        END IF;
                        IF (counts ->> k)::integer < cand.climits[i] THEN
                            UPDATE pgqueue.queue_items SET blocked = false, blocked_key = NULL
                            WHERE queue_items.id = (
                                SELECT b.id FROM pgqueue.queue_items b WHERE b.blocked AND b.blocked_key = k
                                ORDER BY b.sort_at, b.id LIMIT 1 FOR UPDATE SKIP LOCKED);
                        END IF;
                    END LOOP;
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
                IF bounded THEN
                    k := 'fn-default:' || cand.function_id::text;
                    counts := jsonb_set(counts, ARRAY[k], to_jsonb((counts ->> k)::integer + 1));
                END IF;
                IF cardinality(cand.ckeys) > 0 THEN
                    FOR i IN 1 .. cardinality(cand.ckeys) LOOP
                        k := cand.ckeys[i];
                        counts := jsonb_set(counts, ARRAY[k], to_jsonb((counts ->> k)::integer + 1));
                    END LOOP;
                END IF;
                IF v_cap IS NOT NULL THEN
                    app_left := app_left || jsonb_build_object(v_app, v_cap - 1);
                    IF v_cap <= 1 THEN
                        full_apps := full_apps || v_app;
                    END IF;
                END IF;
                ids := ids || cand.id;
                admitted := admitted + 1;
            END LOOP;
        END LOOP;
        IF cardinality(full_apps) > 0 THEN  -- the next round reads no app at its cap
            fns := ARRAY(SELECT x.fid FROM unnest(fns) WITH ORDINALITY AS x(fid, n)
                         WHERE (fn_app ->> x.fid::text) <> ALL (full_apps) ORDER BY x.n);
        END IF;
        depth := least(ceil((p_limit - admitted)::numeric / greatest(cardinality(fns), 1)),
                       ceil(budget::numeric / greatest(cardinality(fns), 1)));
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

-- pgqueue.claim_lease_v1: claim_lease_v2 without app caps. Kept for claim_v1..claim_v4.
CREATE OR REPLACE FUNCTION pgqueue.claim_lease_v1(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer, p_hold_paused boolean)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz
)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    SELECT * FROM pgqueue.claim_lease_v2(p_worker, p_limit, p_lease_ms, p_fn_default_limit, p_hold_paused, NULL, NULL)
$$;

-- pgqueue.claim_v1: claim_lease_v1 over every function, paused ones included (their parked work is
-- held all the same). Kept, with claim_v2 and claim_v3 on it, for workers of earlier releases.
DROP FUNCTION IF EXISTS pgqueue.claim_v1(text, integer, integer);
CREATE OR REPLACE FUNCTION pgqueue.claim_v1(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer DEFAULT 1000)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz
)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    SELECT * FROM pgqueue.claim_lease_v1(p_worker, p_limit, p_lease_ms, p_fn_default_limit, false)
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
LANGUAGE plpgsql  -- a cached plan (a SQL function is planned on every call): run on every claim
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    n integer;
BEGIN
    IF cardinality(p_run_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- each run by its primary key (LIMIT: never flattened), whatever the kept plan thought of the
    -- table's size (`r.id = ANY (p_run_ids)` may be planned as a scan of all runs)
    INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, step_name, max_attempts, run_at,
                                     priority_s)
    SELECT r.id, r.function_id, 'timeout', '$finish-timeout', 'timeouts.finish', 1,
           now() + make_interval(secs => f.finish_timeout_ms / 1000.0), r.priority_s
    FROM unnest(p_run_ids) AS u(id)
    CROSS JOIN LATERAL (SELECT r1.id, r1.function_id, r1.priority_s FROM pgqueue.runs r1
                        WHERE r1.id = u.id LIMIT 1) r
    JOIN pgqueue.functions f ON f.id = r.function_id
    WHERE f.finish_timeout_ms IS NOT NULL
    ON CONFLICT (run_id, step_id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
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

-- pgqueue.claim_v4: claim_v3 that holds the work of paused functions: claim_lease_v1 reads no
-- paused function (checked once per function), so none of its queued items is leased until it is
-- resumed (see function_pause_v1). In one statement, as claim_v3: the runs whose first call it
-- leased are marked running (run_started) and their timeouts.finish scheduled.
CREATE OR REPLACE FUNCTION pgqueue.claim_v4(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer DEFAULT 1000)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz, run_started boolean
)
LANGUAGE plpgsql  -- claim_v5 is defined further down this file
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
BEGIN
    -- claim_v5 without app caps is claim_v4 (plus each item's app_id, dropped here).
    RETURN QUERY
    SELECT c.id, c.run_id, c.function_id, c.kind, c.step_id, c.step_name, c.attempt, c.max_attempts,
           c.lease_token, c.run_at, c.run_started
    FROM pgqueue.claim_v5(p_worker, p_limit, p_lease_ms, p_fn_default_limit, NULL, NULL) c;
END
$$;

-- pgqueue.claim_v5: claim_v4 with the worker's adaptive concurrency per app (p_app_caps,
-- p_app_default_cap: see claim_lease_v2; NULL caps claim as claim_v4 does), and each item's app_id,
-- so the worker can count its calls in flight per app.
CREATE OR REPLACE FUNCTION pgqueue.claim_v5(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer,
    p_app_caps jsonb, p_app_default_cap integer)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz, run_started boolean,
    app_id uuid
)
LANGUAGE plpgsql  -- not sql: a SQL function's statement is planned again on every call (0.7 ms)
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
SET jit = off
-- the started runs are updated by primary key: a kept plan hashed them against all of runs
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY
    WITH claimed AS MATERIALIZED (
        SELECT * FROM pgqueue.claim_lease_v2(p_worker, p_limit, p_lease_ms, p_fn_default_limit, true,
                                             p_app_caps, p_app_default_cap)
    ), starting AS (
        -- Each run by its primary key, in id order (a subquery with FOR UPDATE is never flattened),
        -- whatever the statistics say: with `r.status = 'queued'` indexable, a plan made while
        -- runs was small or not analysed yet walks every queued run instead (runs_live), 15 ms per
        -- claim with 9,000 queued; plpgsql keeps a plan until the table is analysed again.
        SELECT r.id
        FROM (SELECT DISTINCT c.run_id FROM claimed c WHERE c.kind = 'call' ORDER BY c.run_id) u
        CROSS JOIN LATERAL (
            SELECT r1.id FROM pgqueue.runs r1 WHERE r1.id = u.run_id AND r1.status::text = 'queued'
            FOR UPDATE SKIP LOCKED
        ) r
    ), started AS (
        UPDATE pgqueue.runs r SET status = 'running', started_at = now()
        FROM starting s WHERE r.id = s.id
        RETURNING r.id
    ), timed AS MATERIALIZED (
        SELECT pgqueue.finish_timeouts_v1(ARRAY(SELECT started.id FROM started)) AS n
    )
    SELECT c.id, c.run_id, c.function_id, c.kind, c.step_id, c.step_name, c.attempt, c.max_attempts,
           c.lease_token, c.run_at, c.run_id IN (SELECT started.id FROM started), f.app_id
    FROM claimed c CROSS JOIN timed
    LEFT JOIN pgqueue.functions f ON f.id = c.function_id;
END
$$;


-- pgqueue.queue_next_due_at_v1: when the earliest queue item a claim would take comes due (NULL:
-- none). Paused functions' work is held (parked), except what became available since the pause
-- and the rescuer has not parked yet: passed over here (a few rows at most), so an idle worker or
-- executor never wakes for an item the claim will not take.
CREATE OR REPLACE FUNCTION pgqueue.queue_next_due_at_v1()
RETURNS timestamptz
LANGUAGE sql  -- planned on each call, for the queue's size at the time: asked only by idle workers
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(q.run_at) FROM pgqueue.queue_items q
    WHERE q.state = 'available' AND NOT q.blocked
      AND q.function_id <> ALL (ARRAY(SELECT f.id FROM pgqueue.functions f WHERE f.paused_at IS NOT NULL))
$$;


-- pgqueue.run_context_v1: everything one call needs (the run, its function's URL and app, its
-- events and stored steps) as one JSON object, read by claim_v6 for each call it leases and by the
-- run_context query (sql/queries/runs.sql). NULL when the run is gone. Only what a call reads: the
-- function's config (its whole sync payload) stays out.
-- Each event has `user` (`{}` when its sender gave none, as Inngest sends it) and, when it carries
-- sessions, `meta.sessions` (migration 0019; the shape of pgqueue/events/objects.py).
-- `force_step_plan` is the call's ctx.disable_immediate_execution: set once the run has run steps
-- in parallel, and off again once nothing of the run is pending (no call, sleep, wait or invoke
-- open besides the call itself) for runs on request version 2, as Inngest resets it when its
-- parallel steps have drained: the JS SDK then checkpoints the steps that follow, and ends the run
-- with RunComplete (version 1, JS `optimizeParallelism: false`, keeps it set, as in Inngest).
CREATE OR REPLACE FUNCTION pgqueue.run_context_v1(p_run_id text)
RETURNS jsonb
LANGUAGE plpgsql  -- not checked against the schema when created (runs.endpoint_url: migration 0015)
VOLATILE  -- a fresh snapshot: called by claim_v6 after the claim's own writes
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
-- every table by key, whatever its size when the kept plan was made (the queue and the pauses are
-- probed for one run: a plan made on a near-empty queue scanned all of it on every call)
SET enable_seqscan = off
AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', r.id, 'status', r.status::text, 'request_version', r.request_version,
        -- what the run waits for besides this call (queue_open_count, sql/queries/queue.sql), read
        -- only for runs that have run steps in parallel (CASE: evaluated in order)
        'force_step_plan', CASE WHEN NOT r.force_step_plan THEN false
                                WHEN r.request_version < 2 THEN true
                                ELSE EXISTS (SELECT 1 FROM pgqueue.queue_items q
                                             WHERE q.run_id = r.id AND q.step_id <> 'step'
                                               AND NOT (q.kind = 'timeout' AND starts_with(q.step_id, '$')))
                                  OR EXISTS (SELECT 1 FROM pgqueue.pauses p
                                             WHERE p.run_id = r.id AND p.step_id IS NOT NULL) END,
        'max_attempts', r.max_attempts, 'event_ids', to_jsonb(r.event_ids),
        -- a durable endpoint's run is called at its own request URL, with its method
        'function_id', r.function_id, 'slug', f.slug, 'url', coalesce(r.endpoint_url, f.url),
        'endpoint_method', r.endpoint_method, 'app_id', f.app_id,
        'app_name', a.name, 'started_now', false,
        'events', (SELECT coalesce(jsonb_agg(
                       jsonb_build_object('id', coalesce(e.external_id, e.id), 'name', e.name, 'data', e.data,
                                          'user', coalesce(e."user", '{}'::jsonb), 'ts', e.ts)
                       || CASE WHEN e.v IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('v', e.v) END
                       || CASE WHEN e.sessions IS NULL THEN '{}'::jsonb
                               ELSE jsonb_build_object('meta', jsonb_build_object('sessions', e.sessions)) END
                       ORDER BY u.n), '[]'::jsonb)
                   -- each event by its primary key, in the run's order (the first of a repeated
                   -- id): `e.id = ANY (r.event_ids)` is planned as a scan of a small events table,
                   -- which cost 5x more per call until the table grew
                   FROM unnest(r.event_ids) WITH ORDINALITY AS u(eid, n)
                   CROSS JOIN LATERAL (SELECT * FROM pgqueue.events e1 WHERE e1.id = u.eid LIMIT 1) e
                   WHERE u.n = array_position(r.event_ids, u.eid)),
        'steps', (SELECT coalesce(jsonb_agg(jsonb_build_array(s.step_id, s.memo) ORDER BY s.seq), '[]'::jsonb)
                  FROM pgqueue.steps s WHERE s.run_id = r.id))
    FROM pgqueue.runs r
    JOIN pgqueue.functions f ON f.id = r.function_id
    JOIN pgqueue.apps a ON a.id = f.app_id
    WHERE r.id = p_run_id);
END
$$;


-- pgqueue.claim_v6: claim_v5, and for each call item its run's context (run_context_v1), so a
-- call needs no second round trip before it goes out. Read after the claim's writes: a run the
-- claim started reads 'running'; one it could not start (its row was locked) reads 'queued', and
-- the executor then starts it with the run_context query as before.
CREATE OR REPLACE FUNCTION pgqueue.claim_v6(
    p_worker text, p_limit integer, p_lease_ms integer, p_fn_default_limit integer,
    p_app_caps jsonb, p_app_default_cap integer)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz, run_started boolean,
    app_id uuid, context jsonb
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    c record;
BEGIN
    -- A function scan: the claim is complete (materialised) before the loop reads contexts.
    FOR c IN SELECT * FROM pgqueue.claim_v5(p_worker, p_limit, p_lease_ms, p_fn_default_limit,
                                            p_app_caps, p_app_default_cap) LOOP
        id := c.id; run_id := c.run_id; function_id := c.function_id; kind := c.kind; step_id := c.step_id;
        step_name := c.step_name; attempt := c.attempt; max_attempts := c.max_attempts;
        lease_token := c.lease_token; run_at := c.run_at; run_started := c.run_started; app_id := c.app_id;
        context := CASE WHEN c.kind = 'call' THEN pgqueue.run_context_v1(c.run_id) END;
        RETURN NEXT;
    END LOOP;
END
$$;
