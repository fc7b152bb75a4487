-- Flow-control building blocks. `p_now` is a parameter so tests decide time exactly.

-- pgqueue.gcra_v1: generic cell-rate algorithm on one key. Emission interval T = period/limit;
-- tolerance tau = T * (burst - 1). Returns 0 when admitted (and records it), otherwise the seconds
-- until the key admits again (nothing is recorded).
CREATE OR REPLACE FUNCTION pgqueue.gcra_v1(
    p_key text, p_limit integer, p_period_ms bigint, p_burst integer, p_now timestamptz)
RETURNS double precision
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    emission interval := make_interval(secs => (p_period_ms::double precision / greatest(p_limit, 1)) / 1000.0);
    tau      interval := make_interval(secs => (p_period_ms::double precision / greatest(p_limit, 1)) / 1000.0
                                               * greatest(p_burst - 1, 0));
    v_tat    timestamptz;
    allow_at timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN 0;  -- no limit configured
    END IF;
    -- The admitted path is one statement: insert or advance the arrival time if the key admits.
    INSERT INTO pgqueue.gcra_state AS g (key, tat, updated_at) VALUES (p_key, p_now + emission, p_now)
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(g.tat, p_now) + emission, updated_at = p_now
        WHERE greatest(g.tat, p_now) - tau <= p_now
    RETURNING g.tat INTO v_tat;
    IF FOUND THEN
        RETURN 0;
    END IF;
    SELECT g.tat INTO v_tat FROM pgqueue.gcra_state g WHERE g.key = p_key;
    allow_at := greatest(v_tat, p_now) - tau;
    RETURN greatest(extract(epoch FROM allow_at - p_now), 0.001);
END
$$;

-- pgqueue.throttle_admit_v1: GCRA on run starts; `burst` starts at once. Superseded by
-- throttle_admit_v2 (Inngest's limit + burst at once); kept for code from before it.
CREATE OR REPLACE FUNCTION pgqueue.throttle_admit_v1(
    p_key text, p_limit integer, p_period_ms bigint, p_burst integer, p_now timestamptz DEFAULT NULL)
RETURNS double precision
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgqueue.gcra_v1(p_key, p_limit, p_period_ms, greatest(p_burst, 1), coalesce(p_now, now()))
$$;

-- pgqueue.rate_limit_admit_v1: GCRA on run creation with a burst of `limit`, so it admits up to
-- 2 * limit - 1 runs in a period (not the "at most limit" it was meant to); false means the event
-- is skipped. Superseded by rate_limit_admit_v2; kept for code from before it.
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_admit_v1(
    p_key text, p_limit integer, p_period_ms bigint, p_now timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgqueue.gcra_v1(p_key, p_limit, p_period_ms, p_limit, coalesce(p_now, now())) = 0
$$;

-- pgqueue.gcra_v2: GCRA on one key, in whole microseconds so decisions are exact. With emission
-- interval T = p_emission_us and tolerance tau = p_tolerance_us, an arrival at `now` conforms iff
-- max(tat, now) - tau <= now, and then sets tat := max(tat, now) + T. Returns 0 when admitted (and
-- records it), otherwise the seconds until the key admits, max(tat, now) - tau - now > 0 (nothing is
-- recorded). On an idle key, floor(tau / T) + 1 arrivals conform at once, then one per T.
-- (gcra_v1 took period/limit/burst and rounded T to the nearest microsecond; see the _v2 callers.)
CREATE OR REPLACE FUNCTION pgqueue.gcra_v2(
    p_key text, p_emission_us bigint, p_tolerance_us bigint, p_now timestamptz)
RETURNS double precision
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- integer microseconds times a one-microsecond interval: no rounding, no day/month fields
    emission interval := p_emission_us * interval '1 microsecond';
    tau      interval := p_tolerance_us * interval '1 microsecond';
    v_tat    timestamptz;
BEGIN
    -- The admitted path is one statement; a concurrent caller on the same key waits for the row
    -- lock and re-checks the condition against the row it then sees.
    INSERT INTO pgqueue.gcra_state AS g (key, tat, updated_at) VALUES (p_key, p_now + emission, p_now)
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(g.tat, p_now) + emission, updated_at = p_now
        WHERE greatest(g.tat, p_now) - tau <= p_now
    RETURNING g.tat INTO v_tat;
    IF FOUND THEN
        RETURN 0;
    END IF;
    SELECT g.tat INTO v_tat FROM pgqueue.gcra_state g WHERE g.key = p_key;
    RETURN extract(epoch FROM greatest(v_tat, p_now) - tau - p_now);
END
$$;

-- pgqueue.rate_limit_admit_v2: at most `limit` runs created in ANY window of length `period`
-- (Inngest documents rateLimit.limit as "the maximum number of functions to run in the given time
-- period"). GCRA with T = ceil(period / limit) microseconds and no tolerance: an event is admitted
-- iff at least T has passed since the last admitted one. Rounding T up makes limit * T >= period,
-- so limit + 1 admissions always span more than a period. false = skip the event (lossy).
-- rate_limit_admit_v1 allowed a burst of `limit` on top of the rate: up to 2 * limit - 1 per period.
CREATE OR REPLACE FUNCTION pgqueue.rate_limit_admit_v2(
    p_key text, p_limit integer, p_period_ms bigint, p_now timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    -- limit < 1 cannot be synced; a configuration stored before that check keeps v1's "no limit"
    SELECT CASE WHEN p_limit < 1 THEN true
                ELSE pgqueue.gcra_v2(p_key, (p_period_ms * 1000 + p_limit - 1) / p_limit, 0,
                                     coalesce(p_now, now())) = 0 END
$$;

-- pgqueue.throttle_admit_v2: Inngest's queue GCRA on run starts. T = ceil(period / limit)
-- microseconds, tolerance tau = T * (limit + burst - 1): an idle key starts limit + burst runs at
-- once, then one per T; a burst below 1 means the default, 1. Returns 0 when the start is admitted,
-- else the seconds to wait. throttle_admit_v1 started only `burst` at once.
CREATE OR REPLACE FUNCTION pgqueue.throttle_admit_v2(
    p_key text, p_limit integer, p_period_ms bigint, p_burst integer, p_now timestamptz DEFAULT NULL)
RETURNS double precision
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    -- limit < 1 cannot be synced; a configuration stored before that check keeps v1's "no limit"
    SELECT CASE WHEN p_limit < 1 THEN 0::double precision
                ELSE pgqueue.gcra_v2(p_key, t.emission_us,
                                     t.emission_us * (p_limit + greatest(coalesce(p_burst, 1), 1) - 1),
                                     coalesce(p_now, now())) END
    FROM (SELECT (p_period_ms * 1000 + greatest(p_limit, 1) - 1) / greatest(p_limit, 1) AS emission_us) t
$$;

-- pgqueue.queue_items_unblock_v1: when a leased item ends, unpark one item waiting on each of its
-- concurrency keys. A claim admits on a key holding that key's advisory lock exclusively, and may
-- park an item on it for want of the slot this item frees: each key's lock is taken here shared,
-- which waits for such a claim to commit (so its parked item is seen and unparked) and makes a
-- claim that starts meanwhile pass the key over until this commits (so it counts the freed slot).
-- Shared: completions do not queue behind each other on a hot key. concurrency_unblock_v1, run by
-- the rescuer, stays as the safety net; it should find nothing.
CREATE OR REPLACE FUNCTION pgqueue.queue_items_unblock_v1()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    FOREACH k IN ARRAY OLD.ckeys LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtextextended(k, 0));
        UPDATE pgqueue.queue_items SET blocked = false, blocked_key = NULL
        WHERE id = (SELECT b.id FROM pgqueue.queue_items b
                    WHERE b.blocked AND b.blocked_key = k
                    ORDER BY b.sort_at, b.id LIMIT 1 FOR UPDATE SKIP LOCKED);
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS queue_items_unblock_update ON pgqueue.queue_items;
CREATE TRIGGER queue_items_unblock_update AFTER UPDATE OF state ON pgqueue.queue_items
    FOR EACH ROW WHEN (OLD.state = 'leased' AND NEW.state <> 'leased' AND cardinality(OLD.ckeys) > 0)
    EXECUTE FUNCTION pgqueue.queue_items_unblock_v1();
DROP TRIGGER IF EXISTS queue_items_unblock_delete ON pgqueue.queue_items;
-- An item deleted while due and not parked (its run cancelled, say) may have been woken for a
-- slot it now never takes: the wake-up passes on (waking one too many costs a claim's re-park).
CREATE TRIGGER queue_items_unblock_delete AFTER DELETE ON pgqueue.queue_items
    FOR EACH ROW WHEN (cardinality(OLD.ckeys) > 0 AND (OLD.state = 'leased' OR NOT OLD.blocked))
    EXECUTE FUNCTION pgqueue.queue_items_unblock_v1();

-- pgqueue.concurrency_unblock_v1: safety sweep: unpark as many items per key as it has free
-- slots that nothing else will take: its leased items, and its due items not parked (a claim
-- takes or parks them soon, and their ends wake the key), use the slots. Returns the number
-- unparked: wake-ups the normal path missed (counted apart, none expected).
CREATE OR REPLACE FUNCTION pgqueue.concurrency_unblock_v1()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k        text;
    lim      integer;
    in_use   integer;
    fid      uuid;
    total    integer := 0;
    n        integer;
BEGIN
    FOR k IN SELECT DISTINCT b.blocked_key FROM pgqueue.queue_items b WHERE b.blocked LOOP
        SELECT b.climits[array_position(b.ckeys, k)], b.function_id INTO lim, fid
        FROM pgqueue.queue_items b WHERE b.blocked AND b.blocked_key = k LIMIT 1;
        SELECT count(*) INTO in_use FROM pgqueue.queue_items l WHERE l.state = 'leased' AND cardinality(l.ckeys) > 0 AND l.ckeys @> ARRAY[k];
        -- a key of scope fn is its function's (pgqueue/runner/flow.py); for an env or account key
        -- other functions' due items go uncounted: the sweep may unpark early, the claim re-parks
        SELECT in_use + count(*) INTO in_use FROM (
            SELECT 1 FROM pgqueue.queue_items d
            WHERE d.function_id = fid AND d.state = 'available' AND NOT d.blocked AND d.run_at <= now()
              AND d.ckeys @> ARRAY[k]
            LIMIT greatest(coalesce(lim, 0) - in_use, 0)) x;
        IF coalesce(lim, 0) - in_use > 0 THEN
            UPDATE pgqueue.queue_items SET blocked = false, blocked_key = NULL
            WHERE id IN (SELECT b.id FROM pgqueue.queue_items b WHERE b.blocked AND b.blocked_key = k
                         ORDER BY b.sort_at, b.id LIMIT lim - in_use FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
        END IF;
    END LOOP;
    RETURN total;
END
$$;

-- pgqueue.debounce_push_v1: a new event for (function, key). If the key's debounced run is still
-- waiting (its first call not yet claimed), the run takes this event instead of the one it had,
-- and its start moves to min(now + period, first event + timeout). Returns that run and the event
-- it dropped; no row when a new debounced run must be created.
CREATE OR REPLACE FUNCTION pgqueue.debounce_push_v1(
    p_function_id uuid, p_key text, p_event_id text, p_period_s double precision,
    p_timeout_s double precision, p_now timestamptz DEFAULT NULL)
RETURNS TABLE (run_id text, previous_event_id text)
LANGUAGE plpgsql  -- not sql: v2 is defined further down, and plpgsql resolves it when called
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- v2 with no shape keeps the run's keys (v1's behaviour), under v2's window lock
    RETURN QUERY SELECT * FROM pgqueue.debounce_push_v2(p_function_id, p_key, p_event_id, p_period_s,
                                                         p_timeout_s, NULL, p_now);
END
$$;

-- pgqueue.debounce_open_v1: the waiting run of a new debounce window.
CREATE OR REPLACE FUNCTION pgqueue.debounce_open_v1(p_function_id uuid, p_key text, p_run_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgqueue.debounces (function_id, key, run_id, first_at) VALUES (p_function_id, p_key, p_run_id, now())
    ON CONFLICT (function_id, key) DO UPDATE SET run_id = excluded.run_id, first_at = excluded.first_at
$$;

-- pgqueue.batch_append_v1: add an event to the key's open batch if its run still waits. A full
-- batch starts now. Returns the batch's run id, or NULL when a new batch must be opened.
CREATE OR REPLACE FUNCTION pgqueue.batch_append_v1(
    p_function_id uuid, p_key text, p_event_id text, p_max_size integer)
RETURNS text
LANGUAGE plpgsql  -- not sql: v2 is defined further down, and plpgsql resolves it when called
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pgqueue.batch_append_v2(p_function_id, p_key, p_event_id, p_max_size);
END
$$;

-- pgqueue.batch_open_v1: the waiting run of a new batch (already holding its first event).
CREATE OR REPLACE FUNCTION pgqueue.batch_open_v1(p_function_id uuid, p_key text, p_run_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgqueue.batches (function_id, key, run_id, size, first_at) VALUES (p_function_id, p_key, p_run_id, 1, now())
    ON CONFLICT (function_id, key) DO UPDATE SET run_id = excluded.run_id, size = 1, first_at = excluded.first_at
$$;

-- pgqueue.flow_window_lock_v1: serialise the opening of a debounce or batch window per
-- (function, key) until the transaction ends. A `SELECT ... FOR UPDATE` of a window row that does
-- not exist yet locks nothing, so without this two runners could both open a window and both runs
-- would execute. Transaction-scoped advisory locks are safe behind transaction-mode poolers.
CREATE OR REPLACE FUNCTION pgqueue.flow_window_lock_v1(p_kind text, p_function_id uuid, p_key text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(p_kind || ':' || p_function_id::text || ':' || p_key, 0))
$$;

-- pgqueue.flow_shift_start_timeout_v1: `timeouts.start` counts from the moment a run is released
-- to the queue. When a debounce or a full batch moves a waiting run's first call, its
-- $start-timeout moves by the same amount.
CREATE OR REPLACE FUNCTION pgqueue.flow_shift_start_timeout_v1(p_run_id text, p_shift interval)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgqueue.queue_items q SET run_at = q.run_at + p_shift
    WHERE q.run_id = p_run_id AND q.step_id = '$start-timeout' AND q.state = 'available'
$$;

-- pgqueue.debounce_push_v2: as debounce_push_v1, under the window lock, and the waiting run takes
-- everything from the event it will now run with: its concurrency keys, priority and throttle key
-- (p_shape: {ckeys, climits, priority_s, throttle_key, throttle}, as run_create_v2 takes them).
-- Its $start-timeout moves with its release time. The caller re-registers cancelOn listeners.
CREATE OR REPLACE FUNCTION pgqueue.debounce_push_v2(
    p_function_id uuid, p_key text, p_event_id text, p_period_s double precision,
    p_timeout_s double precision, p_shape jsonb, p_now timestamptz DEFAULT NULL)
RETURNS TABLE (run_id text, previous_event_id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    v_now    timestamptz := coalesce(p_now, now());
    d        record;
    item     record;
    prev     text;
    v_ckeys  text[] := coalesce(ARRAY(SELECT jsonb_array_elements_text(p_shape -> 'ckeys')), '{}');
    v_limits integer[] := coalesce(ARRAY(SELECT (jsonb_array_elements_text(p_shape -> 'climits'))::integer), '{}');
    v_prio   integer := coalesce((p_shape ->> 'priority_s')::integer, 0);
    v_run_at timestamptz;
BEGIN
    PERFORM pgqueue.flow_window_lock_v1('debounce', p_function_id, p_key);
    SELECT * INTO d FROM pgqueue.debounces x WHERE x.function_id = p_function_id AND x.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT q.id, q.run_at INTO item
    FROM pgqueue.queue_items q JOIN pgqueue.runs r ON r.id = q.run_id
    -- r.status::text: the run by its primary key, never a walk of runs_live (queue_lock_if_leased)
    WHERE q.run_id = d.run_id AND q.step_id = 'step' AND q.state = 'available' AND r.status::text = 'queued'
    FOR UPDATE OF q;
    IF NOT FOUND THEN
        DELETE FROM pgqueue.debounces x WHERE x.function_id = p_function_id AND x.key = p_key;
        RETURN;
    END IF;
    SELECT r.event_id INTO prev FROM pgqueue.runs r WHERE r.id = d.run_id;
    v_run_at := least(v_now + make_interval(secs => p_period_s),
                      CASE WHEN p_timeout_s IS NULL THEN 'infinity'::timestamptz
                           ELSE d.first_at + make_interval(secs => p_timeout_s) END);
    IF p_shape IS NULL THEN  -- debounce_push_v1: the run keeps the keys of its first event
        UPDATE pgqueue.runs r SET event_id = p_event_id, event_ids = ARRAY[p_event_id] WHERE r.id = d.run_id;
        UPDATE pgqueue.queue_items q SET run_at = v_run_at WHERE q.id = item.id;
    ELSE
        UPDATE pgqueue.runs r
        SET event_id = p_event_id, event_ids = ARRAY[p_event_id], ckeys = v_ckeys, climits = v_limits,
            priority_s = v_prio
        WHERE r.id = d.run_id;
        UPDATE pgqueue.queue_items q
        SET run_at = v_run_at, ckeys = v_ckeys, climits = v_limits, priority_s = v_prio,
            throttle_key = p_shape ->> 'throttle_key', throttle = p_shape -> 'throttle',
            blocked = false, blocked_key = NULL
        WHERE q.id = item.id;
    END IF;
    PERFORM pgqueue.flow_shift_start_timeout_v1(d.run_id, v_run_at - item.run_at);
    UPDATE pgqueue.events e SET skip_reason = 'superseded by a later event (debounce)' WHERE e.id = prev;
    RETURN QUERY SELECT d.run_id, prev;
END
$$;

-- pgqueue.batch_append_v2: as batch_append_v1, under the window lock; a batch that fills up
-- releases its run now and moves its $start-timeout with it.
CREATE OR REPLACE FUNCTION pgqueue.batch_append_v2(
    p_function_id uuid, p_key text, p_event_id text, p_max_size integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    b    record;
    item record;
BEGIN
    PERFORM pgqueue.flow_window_lock_v1('batch', p_function_id, p_key);
    SELECT * INTO b FROM pgqueue.batches x WHERE x.function_id = p_function_id AND x.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT q.id, q.run_at INTO item
    FROM pgqueue.queue_items q JOIN pgqueue.runs r ON r.id = q.run_id
    -- r.status::text: the run by its primary key, never a walk of runs_live (queue_lock_if_leased)
    WHERE q.run_id = b.run_id AND q.step_id = 'step' AND q.state = 'available' AND r.status::text = 'queued'
    FOR UPDATE OF q;
    IF NOT FOUND OR b.size >= p_max_size THEN
        DELETE FROM pgqueue.batches x WHERE x.function_id = p_function_id AND x.key = p_key;
        RETURN NULL;
    END IF;
    UPDATE pgqueue.runs r SET event_ids = r.event_ids || p_event_id WHERE r.id = b.run_id;
    IF b.size + 1 >= p_max_size THEN
        UPDATE pgqueue.queue_items q SET run_at = now() WHERE q.id = item.id;
        PERFORM pgqueue.flow_shift_start_timeout_v1(b.run_id, least(now() - item.run_at, interval '0'));
        DELETE FROM pgqueue.batches x WHERE x.function_id = p_function_id AND x.key = p_key;
        PERFORM pg_notify('pgqueue_queue', '');
    ELSE
        UPDATE pgqueue.batches x SET size = b.size + 1 WHERE x.function_id = p_function_id AND x.key = p_key;
    END IF;
    RETURN b.run_id;
END
$$;
