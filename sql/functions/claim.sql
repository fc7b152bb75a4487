-- pgqueue.claim_v1: lease up to p_limit due queue items for one worker.
-- The CTE picks rows with FOR UPDATE SKIP LOCKED so concurrent workers never wait on each other or
-- take the same row; the UPDATE commits the lease (token + expiry from the database clock) before
-- any work starts, so no row lock is ever held across an HTTP call.
CREATE OR REPLACE FUNCTION pgqueue.claim_v1(p_worker text, p_limit integer, p_lease_ms integer)
RETURNS TABLE (
    id bigint, run_id text, function_id uuid, kind text, step_id text, step_name text,
    attempt integer, max_attempts integer, lease_token uuid, run_at timestamptz
)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT q.id
        FROM pgqueue.queue_items q
        WHERE q.state = 'available' AND q.run_at <= now()
        ORDER BY q.run_at, q.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE pgqueue.queue_items q
    SET state = 'leased',
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => p_lease_ms / 1000.0),
        leased_by = p_worker,
        leased_at = now()
    FROM due
    WHERE q.id = due.id
    RETURNING q.id, q.run_id, q.function_id, q.kind, q.step_id, q.step_name,
              q.attempt, q.max_attempts, q.lease_token, q.run_at
$$;

-- pgqueue.rescue_expired_v1: return expired leases to the queue through the retry path: the
-- attempt counts as used (a call that crashed its worker every time must not loop forever); an
-- item whose attempts are exhausted is handed back anyway with attempt = max_attempts - 1, so the
-- next call is its last and its failure is recorded by the normal failure path.
CREATE OR REPLACE FUNCTION pgqueue.rescue_expired_v1(p_limit integer)
RETURNS TABLE (id bigint, run_id text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH expired AS (
        SELECT q.id
        FROM pgqueue.queue_items q
        WHERE q.state = 'leased' AND q.lease_expires_at < now()
        ORDER BY q.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE pgqueue.queue_items q
    SET state = 'available',
        lease_token = NULL,
        lease_expires_at = NULL,
        leased_by = NULL,
        attempt = least(q.attempt + 1, q.max_attempts - 1),
        run_at = now(),
        last_error = jsonb_build_object('name', 'LeaseExpired',
                                        'message', 'worker lost its lease (crash or timeout); retried')
    FROM expired
    WHERE q.id = expired.id
    RETURNING q.id, q.run_id
$$;
