-- name: pause_create
INSERT INTO pgqueue.pauses (run_id, kind, step_id, step_name, event_name, expression, trigger_event,
                            match_path, match_value, expires_at, race)
VALUES (%(run_id)s, %(kind)s, %(step_id)s, %(step_name)s, %(event_name)s, %(expression)s, %(trigger_event)s::jsonb,
        %(match_path)s, %(match_value)s::jsonb,
        CASE WHEN %(timeout_s)s::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => %(timeout_s)s::float8) END,
        %(race)s)
ON CONFLICT (run_id, step_id) WHERE step_id IS NOT NULL DO NOTHING
RETURNING id, expires_at

-- name: pause_signal_release
-- Before a run waits for a signal: free the name from another step's pause that holds it, when
-- that holder has expired (its timeout is due) or the new wait replaces it (onConflict
-- "replace"). The holder keeps waiting without the name, until its timeout resumes it with null.
UPDATE pgqueue.pauses SET signal = NULL
WHERE signal = %(signal)s AND NOT (run_id = %(run_id)s AND step_id = %(step_id)s)
  AND (%(replace)s OR expires_at <= now())

-- name: pause_create_signal
-- No row: this step's pause exists already (the SDK reported the same wait again), or another
-- step's pause holds the signal (pauses_one_per_signal); pause_step_exists tells which.
INSERT INTO pgqueue.pauses (run_id, kind, step_id, step_name, signal, race, expires_at)
VALUES (%(run_id)s, 'signal', %(step_id)s, %(step_name)s, %(signal)s, %(race)s,
        now() + make_interval(secs => %(timeout_s)s::float8))
ON CONFLICT DO NOTHING
RETURNING id, expires_at

-- name: pause_step_exists
SELECT 1 AS found FROM pgqueue.pauses WHERE run_id = %(run_id)s AND step_id = %(step_id)s

-- name: pause_path_remember
INSERT INTO pgqueue.pause_paths (event_name, match_path) VALUES (%(event_name)s, %(match_path)s)
ON CONFLICT DO NOTHING

-- name: pause_paths_for
SELECT event_name, match_path FROM pgqueue.pause_paths WHERE event_name = ANY(%(names)s::text[])

-- name: pause_consume
-- Exactly one consumer wins a pause.
DELETE FROM pgqueue.pauses WHERE id = %(id)s RETURNING id

-- name: pause_consume_step
DELETE FROM pgqueue.pauses WHERE run_id = %(run_id)s AND step_id = %(step_id)s RETURNING id, kind, race

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
       p.created_at, p.race
FROM unnest(%(idx)s::int[], %(names)s::text[], %(paths)s::text[], %(values)s::jsonb[], %(received)s::timestamptz[])
     AS k(idx, name, path, value, received_at)
JOIN pgqueue.pauses p ON p.event_name = k.name AND p.match_path = k.path AND p.match_value = k.value
WHERE p.created_at < k.received_at AND (p.expires_at IS NULL OR p.expires_at > k.received_at)
UNION ALL
SELECT k.idx, p.id, p.run_id, p.kind, p.step_id, p.step_name, p.event_name, p.expression, p.trigger_event,
       p.created_at, p.race
FROM unnest(%(u_idx)s::int[], %(u_names)s::text[], %(u_received)s::timestamptz[]) AS k(idx, name, received_at)
JOIN pgqueue.pauses p ON p.event_name = k.name AND p.match_path IS NULL
WHERE p.created_at < k.received_at AND (p.expires_at IS NULL OR p.expires_at > k.received_at)
ORDER BY 1, 2

-- name: pause_signal_send
-- POST /v1/signals: the internal function behind pgqueue.send_signal (sql/functions/signals.sql);
-- the run that was waiting, or NULL.
SELECT pgqueue.signal_send_v2(%(signal)s, %(data)s) AS run_id
