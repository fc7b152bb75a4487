-- Dashboard login throttling (api/throttle.py): failures counted per key in pgqueue.login_failures,
-- an exponential wait once a key has too many. `p_now` is a parameter so tests decide time exactly.

-- pgqueue.login_wait_ms_v1: how long a key waits after its last failure when it has `p_failures`:
-- nothing below `p_limit`, then `p_lockout_ms`, doubling with each further failure, at most
-- `p_max_lockout_ms`.
CREATE OR REPLACE FUNCTION pgqueue.login_wait_ms_v1(
    p_failures integer, p_limit integer, p_lockout_ms integer, p_max_lockout_ms integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_failures < p_limit THEN 0
                ELSE least(p_max_lockout_ms::double precision,
                           p_lockout_ms * power(2::double precision, least(p_failures - p_limit, 40)))::integer
           END
$$;

-- pgqueue.login_admit_v1: one login attempt, checked against every key in `p_keys` (key i allows
-- `p_limits[i]` failures before it waits). One row per key comes back.
--
-- While any key waits (its last failure plus its wait is after `p_now`) nothing is recorded and
-- `wait_ms` says how long each key still waits. Otherwise the attempt is counted on every key now,
-- *before* the password is checked (a success takes it back: query login_forget), `wait_ms` is 0,
-- `failures` is the new count and `lock_ms` the wait it sets should the password be wrong. The rows
-- are locked in key order (they are created first so a new key has a row to wait on), so parallel
-- attempts on one key, from any process, are counted one after another: a burst gets no more
-- passwords checked than the limit. A count starts afresh once its last failure is older than
-- `p_forget_ms`; such rows are deleted, a few per admitted attempt.
CREATE OR REPLACE FUNCTION pgqueue.login_admit_v1(
    p_keys text[], p_limits integer[], p_lockout_ms integer, p_max_lockout_ms integer, p_forget_ms integer,
    p_now timestamptz)
RETURNS TABLE (key text, failures integer, wait_ms integer, lock_ms integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    forget_before constant timestamptz := p_now - make_interval(secs => p_forget_ms / 1000.0);
    keys text[] := '{}';
    limits integer[] := '{}';
    counts integer[] := '{}';
    waits integer[] := '{}';
    v_key text;
    v_limit integer;
    v_failures integer;
    v_last timestamptz;
    blocked boolean := false;
BEGIN
    IF cardinality(p_keys) IS DISTINCT FROM cardinality(p_limits) THEN
        RAISE EXCEPTION 'login_admit_v1: % keys but % limits', cardinality(p_keys), cardinality(p_limits);
    END IF;
    INSERT INTO pgqueue.login_failures AS f (key, failures, last_failure_at)
    SELECT k, 0, p_now FROM unnest(p_keys) AS k ORDER BY k
    ON CONFLICT (key) DO NOTHING;

    FOR v_key, v_limit IN SELECT u.k, u.l FROM unnest(p_keys, p_limits) AS u(k, l) ORDER BY u.k LOOP
        SELECT f.failures, f.last_failure_at INTO v_failures, v_last
        FROM pgqueue.login_failures f WHERE f.key = v_key FOR UPDATE;
        IF NOT FOUND OR v_last < forget_before THEN
            v_failures := 0;
        END IF;
        keys := keys || v_key;
        limits := limits || v_limit;
        counts := counts || v_failures;
        waits := waits || greatest(0, ceil(extract(epoch FROM
            v_last + make_interval(secs => pgqueue.login_wait_ms_v1(v_failures, v_limit, p_lockout_ms,
                                                                     p_max_lockout_ms) / 1000.0)
            - p_now) * 1000))::integer;
        blocked := blocked OR waits[cardinality(waits)] > 0;
    END LOOP;

    IF blocked THEN
        -- refused unchecked: leave no row behind for a key this attempt created
        DELETE FROM pgqueue.login_failures f WHERE f.key = ANY (keys) AND f.failures = 0;
        RETURN QUERY SELECT u.k, u.n, u.w, 0 FROM unnest(keys, counts, waits) AS u(k, n, w);
        RETURN;
    END IF;

    INSERT INTO pgqueue.login_failures AS f (key, failures, last_failure_at)
    SELECT u.k, u.n + 1, p_now FROM unnest(keys, counts) AS u(k, n)
    ON CONFLICT (key) DO UPDATE SET failures = EXCLUDED.failures, last_failure_at = EXCLUDED.last_failure_at;

    DELETE FROM pgqueue.login_failures f WHERE f.key IN (
        SELECT s.key FROM pgqueue.login_failures s
        WHERE s.last_failure_at < forget_before AND s.key <> ALL (keys)
        ORDER BY s.last_failure_at LIMIT 20 FOR UPDATE SKIP LOCKED);

    RETURN QUERY
    SELECT u.k, u.n + 1, 0, pgqueue.login_wait_ms_v1(u.n + 1, u.l, p_lockout_ms, p_max_lockout_ms)
    FROM unnest(keys, counts, limits) AS u(k, n, l);
END
$$;
