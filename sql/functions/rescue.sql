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

-- pgqueue.interrupt_delay_v1: seconds before an interrupted item is tried again. The first
-- interruption is usually not the item's fault (a worker crashed or was redeployed): at once.
-- Later ones follow the retry backoff table (pgqueue/queue/backoff.py TABLE_S) with its jitter.
CREATE OR REPLACE FUNCTION pgqueue.interrupt_delay_v1(p_interrupts integer, p_scale double precision)
RETURNS double precision
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_interrupts <= 1 THEN 0.0
                ELSE ((ARRAY[15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200])[least(p_interrupts - 1, 10)]
                      + random() * 30.0) * p_scale
           END
$$;

-- pgqueue.interrupt_v1: the engine hands leased items back without applying an answer (p_error
-- says why: an engine error while applying, an executor invocation's deadline). Counted in
-- `interrupts` (the app's `attempt` is not used), and delayed by interrupt_delay_v1. An item that
-- reaches p_max_interrupts is not handed back: it stays leased, with a fresh one-minute lease
-- (exhausted = true), for the caller to fail its run. If the caller dies before doing so, the lease
-- expires and the next rescue hands it over again, so the failure itself cannot be lost.
-- p_tokens NULL: the caller has locked p_ids itself (the rescuer); else only items still leased
-- with these tokens are taken.
CREATE OR REPLACE FUNCTION pgqueue.interrupt_v1(
    p_ids bigint[], p_tokens uuid[], p_error jsonb, p_max_interrupts integer,
    p_backoff_scale double precision DEFAULT 1.0)
RETURNS TABLE (id bigint, run_id text, lease_token uuid, exhausted boolean)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH held AS (
        SELECT q.id, q.interrupts + 1 >= p_max_interrupts AS exhausted
        FROM pgqueue.queue_items q
        JOIN unnest(p_ids, coalesce(p_tokens, '{}')) AS l(id, token)
          ON q.id = l.id AND (p_tokens IS NULL OR q.lease_token = l.token)
        WHERE q.state = 'leased'
        ORDER BY q.id
        FOR UPDATE OF q
    )
    UPDATE pgqueue.queue_items q
    SET state = CASE WHEN h.exhausted THEN 'leased'::pgqueue.item_state ELSE 'available' END,
        lease_token = CASE WHEN h.exhausted THEN gen_random_uuid() END,
        lease_expires_at = CASE WHEN h.exhausted THEN now() + interval '1 minute' END,
        interrupts = least(q.interrupts + 1, p_max_interrupts),
        run_at = CASE WHEN h.exhausted THEN q.run_at
                      ELSE now() + make_interval(secs => pgqueue.interrupt_delay_v1(q.interrupts + 1, p_backoff_scale))
                 END,
        last_error = p_error
    FROM held h
    WHERE q.id = h.id
    RETURNING q.id, q.run_id, q.lease_token, h.exhausted
$$;

-- pgqueue.rescue_expired_v2: expired leases are interruptions (interrupt_v1) with LeaseExpired: a
-- crashed or hung worker is not the app's failure, so no attempt is used, but an item whose calls
-- keep outliving their lease ends its run instead of going round forever.
CREATE OR REPLACE FUNCTION pgqueue.rescue_expired_v2(
    p_limit integer, p_max_interrupts integer, p_backoff_scale double precision DEFAULT 1.0)
RETURNS TABLE (id bigint, run_id text, lease_token uuid, exhausted boolean)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH expired AS MATERIALIZED (
        SELECT q.id
        FROM pgqueue.queue_items q
        WHERE q.state = 'leased' AND q.lease_expires_at < now()
        ORDER BY q.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    SELECT * FROM pgqueue.interrupt_v1(
        ARRAY(SELECT e.id FROM expired e), NULL,
        jsonb_build_object('name', 'LeaseExpired',
                           'message', 'the call outlived its lease (worker crash, hang or timeout)'),
        p_max_interrupts, p_backoff_scale)
$$;
