-- Retention: small DELETE batches, each its own short transaction, that skip rows someone holds.

-- name: retention_prune_runs
-- Finished runs that ended before the cutoff, oldest first (index runs_ended); their steps,
-- attempts, pauses and items go with them (ON DELETE CASCADE). A run is kept while an open
-- idempotency window still names it, so "which run did this key start?" stays answerable.
WITH doomed AS (
    SELECT r.id FROM pgqueue.runs r
    WHERE r.ended_at < %(cutoff)s AND r.status IN ('completed', 'failed', 'cancelled')
      AND NOT EXISTS (SELECT 1 FROM pgqueue.idempotency_keys k
                      WHERE k.run_id = r.id AND k.expires_at > now())
    ORDER BY r.ended_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM pgqueue.runs r USING doomed WHERE r.id = doomed.id
RETURNING r.id

-- name: retention_prune_events
-- Events received before the cutoff that nothing needs any more: not waiting in the runner's
-- inbox, not an event of any remaining run (live, recent, or a replay of one), and not the
-- recorded event of an open dedupe window.
WITH doomed AS (
    SELECT e.id FROM pgqueue.events e
    WHERE e.received_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM pgqueue.event_inbox i WHERE i.event_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.event_ids @> ARRAY[e.id])
      AND NOT EXISTS (SELECT 1 FROM pgqueue.event_dedupe d
                      WHERE d.event_id = e.id AND d.expires_at > now())
    ORDER BY e.received_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM pgqueue.events e USING doomed WHERE e.id = doomed.id
RETURNING e.id

-- name: retention_prune_cancellations
-- Bulk-cancellation records older than the cutoff (they only report what was cancelled).
DELETE FROM pgqueue.cancellations WHERE id IN (
    SELECT id FROM pgqueue.cancellations WHERE created_at < %(cutoff)s
    ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id
