-- pgqueue.idempotency_claim_v1: claim an idempotency key for a new run. True when the run may
-- start (no live claim in the last 24 h); false when the key was used within its window.
CREATE OR REPLACE FUNCTION pgqueue.idempotency_claim_v1(
    p_function_id uuid, p_key text, p_run_id text, p_now timestamptz DEFAULT NULL,
    p_period interval DEFAULT interval '24 hours')
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH claimed AS (
        INSERT INTO pgqueue.idempotency_keys AS k (function_id, key, run_id, expires_at)
        VALUES (p_function_id, p_key, p_run_id, coalesce(p_now, now()) + p_period)
        ON CONFLICT (function_id, key) DO UPDATE
            SET run_id = excluded.run_id, expires_at = excluded.expires_at
            WHERE k.expires_at <= coalesce(p_now, now())
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM claimed)
$$;

-- pgqueue.singleton_claim_v1: the singleton slot of (function, key) for a new run.
-- Returns the run id that currently holds the slot when it is still active (the caller skips
-- or cancels it per mode), or NULL when the new run took the slot.
CREATE OR REPLACE FUNCTION pgqueue.singleton_claim_v1(p_function_id uuid, p_key text, p_run_id text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    holder text;
BEGIN
    INSERT INTO pgqueue.singletons (function_id, key, run_id) VALUES (p_function_id, p_key, p_run_id)
    ON CONFLICT (function_id, key) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT s.run_id INTO holder FROM pgqueue.singletons s
    WHERE s.function_id = p_function_id AND s.key = p_key FOR UPDATE;
    IF EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = holder AND r.status IN ('queued', 'running')) THEN
        RETURN holder;
    END IF;
    UPDATE pgqueue.singletons SET run_id = p_run_id WHERE function_id = p_function_id AND key = p_key;
    RETURN NULL;
END
$$;

-- pgqueue.singleton_take_v1: after cancelling the holder (mode cancel), hand the slot over.
CREATE OR REPLACE FUNCTION pgqueue.singleton_take_v1(p_function_id uuid, p_key text, p_run_id text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgqueue.singletons SET run_id = p_run_id WHERE function_id = p_function_id AND key = p_key
$$;
