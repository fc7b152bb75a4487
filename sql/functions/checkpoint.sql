-- pgqueue.checkpoint_store_v1: store the steps a running call reports (POST
-- /v1/checkpoint/{runId}/async, pgqueue/executor/checkpoint.py) in one statement, fenced like
-- every apply: the run must be live and the queue item still leased with the call's token.
-- p_steps: [{"step_id", "name", "memo"}, ...]. First stored output wins (a checkpoint sent again
-- stores nothing). Returns one row:
--   verdict  'ok' | 'missing' (no such run) | 'ended' (the run ended) | 'stale' (the lease is
--            gone) | 'other_run' (the item is another run's) | 'other_function' (p_fn_id is not
--            the item's function); nothing is stored unless 'ok'
--   stored, step_count, state_bytes (the run's totals after storing, for the caller's limits),
--   run_status, item_step_id, item_attempt.
CREATE OR REPLACE FUNCTION pgqueue.checkpoint_store_v1(
    p_run_id text, p_item_id bigint, p_lease_token uuid, p_fn_id text, p_steps jsonb)
RETURNS TABLE (verdict text, stored integer, step_count integer, state_bytes bigint, run_status text,
               item_step_id text, item_attempt integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    v_run  record;
    v_item record;
    v_n    integer;
    v_size bigint;
BEGIN
    SELECT r.status::text AS status, t.step_count, t.state_bytes INTO v_run
    FROM pgqueue.runs r
    -- the run's step count and state size: its steps' (they are no counters on runs since 0017)
    CROSS JOIN LATERAL (SELECT count(*)::integer AS step_count, coalesce(sum(s.size), 0)::bigint AS state_bytes
                        FROM pgqueue.steps s WHERE s.run_id = r.id) t
    WHERE r.id = p_run_id FOR UPDATE OF r;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing', 0, 0, 0::bigint, NULL::text, NULL::text, NULL::integer;
        RETURN;
    END IF;
    IF v_run.status NOT IN ('queued', 'running') THEN
        RETURN QUERY SELECT 'ended', 0, v_run.step_count, v_run.state_bytes, v_run.status, NULL::text, NULL::integer;
        RETURN;
    END IF;
    -- by primary key: `q.state = 'leased'` matches the partial indexes of leases, and a plan made
    -- when few items were leased walked all of them instead (queue_lock_if_leased, same fence)
    SELECT q.run_id, q.function_id, q.step_id, q.attempt INTO v_item
    FROM pgqueue.queue_items q
    WHERE q.id = p_item_id AND q.state::text = 'leased' AND q.lease_token = p_lease_token
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'stale', 0, v_run.step_count, v_run.state_bytes, v_run.status, NULL::text, NULL::integer;
        RETURN;
    END IF;
    IF v_item.run_id <> p_run_id THEN
        RETURN QUERY SELECT 'other_run', 0, v_run.step_count, v_run.state_bytes, v_run.status, NULL::text, NULL::integer;
        RETURN;
    END IF;
    IF p_fn_id IS NOT NULL AND p_fn_id <> v_item.function_id::text THEN
        RETURN QUERY SELECT 'other_function', 0, v_run.step_count, v_run.state_bytes, v_run.status,
                            NULL::text, NULL::integer;
        RETURN;
    END IF;
    WITH s AS (
        INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
        SELECT p_run_id, x.step_id, x.name, 'StepRun', x.memo, v_item.attempt
        FROM ROWS FROM (jsonb_to_recordset(p_steps) AS (step_id text, name text, memo jsonb))
             WITH ORDINALITY AS x(step_id, name, memo, ord)
        ORDER BY x.ord
        ON CONFLICT (run_id, step_id) DO NOTHING
        RETURNING octet_length(memo::text) AS size
    )
    SELECT count(*), coalesce(sum(s.size), 0) INTO v_n, v_size FROM s;
    RETURN QUERY SELECT 'ok', v_n, v_run.step_count + v_n, v_run.state_bytes + v_size, v_run.status,
                        v_item.step_id, v_item.attempt;
END
$$;
