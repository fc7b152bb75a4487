-- name: pause_create
INSERT INTO pgqueue.pauses (run_id, kind, step_id, step_name, event_name, expression, trigger_event,
                            match_path, match_value, expires_at)
VALUES (%(run_id)s, %(kind)s, %(step_id)s, %(step_name)s, %(event_name)s, %(expression)s, %(trigger_event)s::jsonb,
        %(match_path)s, %(match_value)s::jsonb,
        CASE WHEN %(timeout_s)s::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => %(timeout_s)s::float8) END)
ON CONFLICT (run_id, step_id) WHERE step_id IS NOT NULL DO NOTHING
RETURNING id, expires_at

-- name: pause_path_remember
INSERT INTO pgqueue.pause_paths (event_name, match_path) VALUES (%(event_name)s, %(match_path)s)
ON CONFLICT DO NOTHING

-- name: pause_paths_for
SELECT event_name, match_path FROM pgqueue.pause_paths WHERE event_name = ANY(%(names)s::text[])

-- name: pause_consume
-- Exactly one consumer wins a pause.
DELETE FROM pgqueue.pauses WHERE id = %(id)s RETURNING id

-- name: pause_consume_step
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s AND step_id = %(step_id)s RETURNING id, kind

-- name: pause_delete_for_run
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s

-- name: pause_delete_cancel_listeners
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s AND kind = 'cancel'

-- name: pause_expire_cancel_listeners
-- cancelOn listeners whose timeout passed, a batch at a time (index pauses_cancel_expires). One is
-- kept while the runner may still match it: until every event received before it expired has left
-- the runner's inbox (the inbox is in receipt order; a minute's margin covers ingests in flight).
DELETE FROM pgqueue.pauses WHERE id IN (
    SELECT p.id FROM pgqueue.pauses p
    WHERE p.kind = 'cancel' AND p.expires_at IS NOT NULL
      AND p.expires_at < least(now(), (SELECT e.received_at FROM pgqueue.event_inbox i
                                       JOIN pgqueue.events e ON e.id = i.event_id
                                       ORDER BY i.seq LIMIT 1)) - interval '1 minute'
    ORDER BY p.expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING id

-- name: pause_paths_prune
-- Paths no pause uses any more (see pgqueue.pause_paths_prune_v1 for how it stays race-free).
SELECT pgqueue.pause_paths_prune_v1() AS pruned

-- name: queue_delete_step
DELETE FROM pgqueue.queue_items WHERE run_id = %(run_id)s AND step_id = %(step_id)s AND state = 'available'
RETURNING id


-- name: pause_candidates_batch
-- Candidates for a whole batch of events in one statement: by index on (name, path, value), plus
-- the unindexed pauses of names that have them. `idx` says which event a row is for.
SELECT k.idx, p.id, p.run_id, p.kind, p.step_id, p.step_name, p.event_name, p.expression, p.trigger_event,
       p.created_at
FROM unnest(%(idx)s::int[], %(names)s::text[], %(paths)s::text[], %(values)s::jsonb[], %(received)s::timestamptz[])
     AS k(idx, name, path, value, received_at)
JOIN pgqueue.pauses p ON p.event_name = k.name AND p.match_path = k.path AND p.match_value = k.value
WHERE p.created_at < k.received_at AND (p.expires_at IS NULL OR p.expires_at > k.received_at)
UNION ALL
SELECT k.idx, p.id, p.run_id, p.kind, p.step_id, p.step_name, p.event_name, p.expression, p.trigger_event,
       p.created_at
FROM unnest(%(u_idx)s::int[], %(u_names)s::text[], %(u_received)s::timestamptz[]) AS k(idx, name, received_at)
JOIN pgqueue.pauses p ON p.event_name = k.name AND p.match_path IS NULL
WHERE p.created_at < k.received_at AND (p.expires_at IS NULL OR p.expires_at > k.received_at)
ORDER BY 1, 2
