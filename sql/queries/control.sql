-- name: function_resolve
SELECT f.id, f.slug, f.app_id, f.retries, f.config, f.paused_at, f.archived_at
FROM pgqueue.functions f
WHERE f.id::text = %(ref)s OR f.slug = %(ref)s
ORDER BY (f.id::text = %(ref)s) DESC LIMIT 1

-- name: function_set_paused
-- Pausing holds the function's queued work, resuming releases it (sql/functions/function_pause.sql).
SELECT id, slug, paused_at, items FROM pgqueue.function_pause_v1(%(id)s, %(paused)s)

-- name: runs_live_in_range
-- A function's live runs (live_runs), each checked on its run row.
SELECT r.id, r.event_id, r.event_ids
FROM pgqueue.live_runs l JOIN pgqueue.runs r ON r.id = l.run_id
WHERE l.function_id = %(function_id)s AND l.ended_at IS NULL AND r.status IN ('queued', 'running')
  AND (%(after)s::timestamptz IS NULL OR r.created_at >= %(after)s)
  AND r.created_at < %(before)s
  AND (%(after_id)s::text IS NULL OR l.run_id > %(after_id)s)
ORDER BY l.run_id
LIMIT %(limit)s

-- name: runs_ended_in_range
-- A function's runs by creation time, read by their ids (runs_function): a time range bounds the
-- ids, with ten minutes' margin for the clocks of the hosts that made them.
SELECT r.id, r.function_id, r.event_id, r.event_ids, r.max_attempts
FROM pgqueue.runs r
WHERE r.function_id = %(function_id)s
  AND r.id >= pgqueue.ulid_bound_v1(greatest(%(after)s::timestamptz - interval '10 minutes', 'epoch'))
  AND r.id < pgqueue.ulid_bound_v1(%(before)s::timestamptz + interval '10 minutes')
  AND r.status::text = ANY(%(statuses)s::text[])
  AND r.created_at >= %(after)s AND r.created_at < %(before)s
ORDER BY r.id
LIMIT %(limit)s

-- name: cancellation_create
INSERT INTO pgqueue.cancellations (id, app_id, function_id, started_after, started_before, expression)
VALUES (%(id)s, %(app_id)s, %(function_id)s, %(started_after)s, %(started_before)s, %(expression)s)
RETURNING id, app_id, function_id, started_after, started_before, expression, cancelled_count, created_at

-- name: cancellation_count
UPDATE pgqueue.cancellations SET cancelled_count = cancelled_count + %(n)s WHERE id = %(id)s
RETURNING id, app_id, function_id, started_after, started_before, expression, cancelled_count, created_at

-- name: cancellation_list
SELECT id, app_id, function_id, started_after, started_before, expression, cancelled_count, created_at
FROM pgqueue.cancellations ORDER BY created_at DESC, id DESC LIMIT %(limit)s

-- name: cancellation_delete
DELETE FROM pgqueue.cancellations WHERE id = %(id)s RETURNING id

-- name: prune_expired_keys
-- Expired dedupe and idempotency windows, a small batch at a time.
WITH d AS (
    DELETE FROM pgqueue.event_dedupe WHERE external_id IN (
        SELECT external_id FROM pgqueue.event_dedupe WHERE expires_at < now() LIMIT %(limit)s)
    RETURNING 1
), k AS (
    DELETE FROM pgqueue.idempotency_keys WHERE (function_id, key) IN (
        SELECT function_id, key FROM pgqueue.idempotency_keys WHERE expires_at < now() LIMIT %(limit)s)
    RETURNING 1
)
SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM k) AS pruned

-- name: runs_live_of_function
SELECT l.run_id AS id FROM pgqueue.live_runs l
WHERE l.function_id = %(function_id)s AND l.ended_at IS NULL
ORDER BY l.run_id LIMIT %(limit)s

-- name: rerun_step_find
-- The step a rerun starts from, by its stored (hashed) id or by its name: an exact id first, then
-- the steps of that name in the order stored (two rows say the name is ambiguous).
SELECT s.step_id, s.name, s.op, s.seq
FROM pgqueue.steps s
WHERE s.run_id = %(run_id)s AND (s.step_id = %(step)s OR s.name = %(step)s)
ORDER BY (s.step_id = %(step)s) DESC, s.seq
LIMIT 2

-- name: rerun_steps_copy
-- A rerun keeps the outputs the original stored before the step it starts from, in their order
-- (seq), as the new run's own memoised steps: stored now and produced by no call of the new run
-- (started_at NULL), so the SDK skips them and its trace shows no call for them. The original's
-- request version goes with them: the SDK hashes and reads the steps as it did.
WITH copied AS (
    INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
    SELECT %(run_id)s, s.step_id, s.name, s.op, s.memo, s.attempt
    FROM pgqueue.steps s
    WHERE s.run_id = %(original_id)s AND s.seq < %(before_seq)s
    ORDER BY s.seq
    RETURNING 1
), versioned AS (
    UPDATE pgqueue.runs r SET request_version = o.request_version
    FROM pgqueue.runs o
    WHERE r.id = %(run_id)s AND o.id = %(original_id)s AND r.request_version <> o.request_version
    RETURNING 1
)
SELECT (SELECT count(*) FROM copied)::integer AS copied
