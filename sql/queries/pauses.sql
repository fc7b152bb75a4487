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

-- name: pause_candidates
-- Pauses an event may resume: by index on (name, path, value), plus the unindexed ones of its
-- name. Only pauses created before the event was received are candidates.
SELECT p.id, p.run_id, p.kind, p.step_id, p.step_name, p.event_name, p.expression, p.trigger_event,
       p.created_at
FROM pgqueue.pauses p
JOIN unnest(%(paths)s::text[], %(values)s::jsonb[]) AS k(path, value)
  ON p.match_path = k.path AND p.match_value = k.value
WHERE p.event_name = %(name)s AND p.match_path IS NOT NULL AND p.created_at < %(received_at)s
  AND (p.expires_at IS NULL OR p.expires_at > %(received_at)s)
UNION ALL
SELECT p.id, p.run_id, p.kind, p.step_id, p.step_name, p.event_name, p.expression, p.trigger_event,
       p.created_at
FROM pgqueue.pauses p
WHERE p.event_name = %(name)s AND p.match_path IS NULL AND p.created_at < %(received_at)s
  AND (p.expires_at IS NULL OR p.expires_at > %(received_at)s)
ORDER BY id

-- name: pause_consume
-- Exactly one consumer wins a pause.
DELETE FROM pgqueue.pauses WHERE id = %(id)s RETURNING id

-- name: pause_consume_step
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s AND step_id = %(step_id)s RETURNING id, kind

-- name: pause_delete_for_run
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s

-- name: pause_expire_cancel_listeners
DELETE FROM pgqueue.pauses WHERE kind = 'cancel' AND expires_at < now()

-- name: queue_delete_step
DELETE FROM pgqueue.queue_items WHERE run_id = %(run_id)s AND step_id = %(step_id)s AND state = 'available'
RETURNING id

-- name: run_set_correlation
UPDATE pgqueue.runs SET correlation_id = %(correlation_id)s WHERE id = %(run_id)s
