-- name: queue_claim
-- claim_v6: claim_v4 with each call's run context; capped per app by the worker's adaptive
-- concurrency when app_caps is not NULL (claim_v5).
SELECT * FROM pgqueue.claim_v6(%(worker)s, %(limit)s, %(lease_ms)s, %(fn_default_limit)s,
                               %(app_caps)s::jsonb, %(app_default_cap)s)

-- name: queue_unblock_sweep
SELECT pgqueue.concurrency_unblock_v1() AS unblocked

-- name: queue_rescue_expired
SELECT * FROM pgqueue.rescue_expired_v2(%(limit)s, %(max_interrupts)s, %(backoff_scale)s)

-- name: queue_lock_if_leased
-- The fencing check every apply starts with: zero rows means our lease is gone. `state::text`: a
-- plain `state = 'leased'` matches the partial indexes of leases, and a plan made when few items
-- were leased walked all of them (every lease read per apply) instead of the primary key.
SELECT id, run_id, function_id, step_id, attempt, max_attempts, interrupts, leased_at, race FROM pgqueue.queue_items
WHERE id = %(id)s AND state::text = 'leased' AND lease_token = %(lease_token)s
FOR UPDATE

-- name: queue_delete
DELETE FROM pgqueue.queue_items WHERE id = %(id)s

-- name: queue_retry
UPDATE pgqueue.queue_items
SET state = 'available', lease_token = NULL, lease_expires_at = NULL, leased_by = NULL,
    attempt = attempt + 1, last_error = %(error)s::jsonb,
    run_at = now() + make_interval(secs => %(delay_s)s)
WHERE id = %(id)s AND lease_token = %(lease_token)s

-- name: queue_enqueue
-- At most one open item per (run, step): a second enqueue of the same step is a no-op.
-- Calls carry the run's concurrency keys and priority; timers (sleep, timeout) hold no slot.
INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, step_name, max_attempts, run_at,
                                 ckeys, climits, priority_s, race)
SELECT r.id, %(function_id)s, %(kind)s, %(step_id)s, %(step_name)s, %(max_attempts)s,
       CASE WHEN %(run_at)s::timestamptz IS NULL THEN now() + make_interval(secs => %(delay_s)s)
            ELSE greatest(%(run_at)s::timestamptz, now()) END,
       CASE WHEN %(kind)s = 'call' THEN r.ckeys ELSE '{}' END,
       CASE WHEN %(kind)s = 'call' THEN r.climits ELSE '{}' END,
       r.priority_s, %(race)s
FROM pgqueue.runs r WHERE r.id = %(run_id)s
ON CONFLICT (run_id, step_id) DO NOTHING
RETURNING id, run_at

-- name: queue_open_count
-- What the run still waits for: queue items and step pauses (waitForEvent, invoke; an invoke
-- without a timeout has no item). Run-level timers ($start-timeout, $finish-timeout) do not hold
-- a run back, nor do cancelOn listeners.
SELECT (SELECT count(*) FROM pgqueue.queue_items
        WHERE run_id = %(run_id)s AND NOT (kind = 'timeout' AND starts_with(step_id, '$')))
     + (SELECT count(*) FROM pgqueue.pauses WHERE run_id = %(run_id)s AND step_id IS NOT NULL) AS n

-- name: queue_delete_for_run
DELETE FROM pgqueue.queue_items WHERE run_id = %(run_id)s

-- name: queue_extend_leases
-- Never past the call's own deadline (claim time + max_lease_s): a call the worker fails to end
-- (a hung event loop) loses its lease then, and the rescuer counts it as an interruption.
UPDATE pgqueue.queue_items q
SET lease_expires_at = least(now() + make_interval(secs => %(lease_ms)s / 1000.0),
                             q.leased_at + make_interval(secs => %(max_lease_s)s::float8))
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS l(id, token)
WHERE q.id = l.id AND q.lease_token = l.token AND q.state = 'leased'
  AND q.leased_at + make_interval(secs => %(max_lease_s)s::float8) > now()
RETURNING q.id

-- name: queue_release
-- Shutdown: hand leases back without using an attempt.
UPDATE pgqueue.queue_items q
SET state = 'available', lease_token = NULL, lease_expires_at = NULL, leased_by = NULL, run_at = now()
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS l(id, token)
WHERE q.id = l.id AND q.lease_token = l.token AND q.state = 'leased'
RETURNING q.id

-- name: queue_next_due
SELECT pgqueue.queue_next_due_at_v1() - now() AS wait

-- name: queue_hold_paused
SELECT pgqueue.function_hold_paused_v1() AS held

-- name: notify_queue
SELECT pg_notify('pgqueue_queue', '')

-- name: queue_interrupt
-- The engine hands leased items back without applying an answer (engine error, deadline): counted
-- and bounded, see pgqueue.interrupt_v1.
SELECT * FROM pgqueue.interrupt_v1(%(ids)s::bigint[], %(tokens)s::uuid[], %(error)s::jsonb,
                                   %(max_interrupts)s, %(backoff_scale)s)

-- name: complete_batch
-- The executor's group commit of finished calls (see sql/functions/complete.sql).
SELECT item_id, result, context FROM pgqueue.complete_v2(%(batch)s::jsonb, %(max_steps)s, %(max_state_bytes)s)

-- name: queue_report_app_levels
-- A worker's adaptive concurrency levels (pgqueue.worker_app_levels): its rows upserted, its apps
-- no longer listed removed, and every worker's rows older than 5 minutes pruned.
WITH levels AS (
    SELECT * FROM unnest(%(app_ids)s::uuid[], %(limits)s::integer[], %(in_flight)s::integer[])
        AS x(app_id, concurrency_limit, in_flight)
), upserted AS (
    INSERT INTO pgqueue.worker_app_levels AS w (worker, app_id, concurrency_limit, in_flight, updated_at)
    SELECT %(worker)s, l.app_id, l.concurrency_limit, l.in_flight, now() FROM levels l
    ON CONFLICT (worker, app_id) DO UPDATE
    SET concurrency_limit = excluded.concurrency_limit, in_flight = excluded.in_flight, updated_at = now()
    RETURNING 1
)
DELETE FROM pgqueue.worker_app_levels w
WHERE (w.worker = %(worker)s AND w.app_id <> ALL (%(app_ids)s::uuid[]))
   OR (w.worker <> %(worker)s AND w.updated_at < now() - interval '5 minutes')

-- name: queue_forget_app_levels
-- A worker that stops: its levels go with it.
DELETE FROM pgqueue.worker_app_levels WHERE worker = %(worker)s

-- name: housekeeping_count
UPDATE pgqueue.housekeeping_counts
SET n = n + CASE name WHEN 'leases_expired' THEN %(leases_expired)s WHEN 'missed_unparks' THEN %(missed_unparks)s END,
    updated_at = now()
WHERE (name = 'leases_expired' AND %(leases_expired)s > 0) OR (name = 'missed_unparks' AND %(missed_unparks)s > 0)

-- name: housekeeping_counts
SELECT name, n FROM pgqueue.housekeeping_counts ORDER BY name
