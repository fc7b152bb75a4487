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
