-- name: run_create
SELECT pgqueue.run_create_v2(%(runs)s::jsonb) AS created

-- name: run_context
-- Everything one call needs (pgqueue.run_context_v1), in one round trip; marks a queued run as
-- running (when its claim could not: the run row was locked) and schedules its timeouts.finish in
-- the same statement.
-- `status::text`: the run by its primary key, never a walk of every queued run through runs_live
-- (a plan made when few runs were queued prefers it; see queue_lock_if_leased).
WITH started AS (
    UPDATE pgqueue.runs SET status = 'running', started_at = now()
    WHERE id = %(run_id)s AND status::text = 'queued'
    RETURNING id
), timed AS MATERIALIZED (
    SELECT pgqueue.finish_timeouts_v1(ARRAY(SELECT started.id FROM started)) AS n
)
SELECT pgqueue.run_context_v1(%(run_id)s)
       -- this call starts the run (its claim could not)
       || jsonb_build_object('started_now', EXISTS (SELECT 1 FROM started)) AS context
FROM timed

-- name: run_lock
SELECT id, status::text AS status, event_id, event_ids, function_id, max_attempts, request_version, correlation_id
FROM pgqueue.runs WHERE id = %(run_id)s FOR UPDATE

-- name: run_set_request_version
UPDATE pgqueue.runs SET request_version = %(version)s WHERE id = %(run_id)s AND request_version <> %(version)s

-- name: run_force_step_plan
UPDATE pgqueue.runs SET force_step_plan = true WHERE id = %(run_id)s AND NOT force_step_plan

-- name: run_finish
-- State-guarded: only a live run can finish; zero rows means someone else (cancel) won.
-- A run ended by a call's answer records that call (its start and attempt) instead of an attempts row.
-- Its end is recorded (live_runs, run_counts, run_failures) in the same statement.
WITH ended AS (
    UPDATE pgqueue.runs
    SET status = %(status)s::pgqueue.run_status, output = %(output)s::jsonb, error = %(error)s::jsonb,
        ended_at = now(), started_at = coalesce(started_at, now()),
        final_call_started_at = %(call_started_at)s, final_call_attempt = %(call_attempt)s,
        final_call_item_id = %(call_item_id)s
    WHERE id = %(run_id)s AND status IN ('queued', 'running')
    RETURNING id, function_id, event_id, event_ids, correlation_id, status, created_at, ended_at
), recorded AS (
    SELECT pgqueue.runs_ended_v1(array_agg(id), array_agg(function_id), array_agg(status::text),
                                 array_agg(created_at), array_agg(ended_at)) AS n FROM ended
)
SELECT e.id, e.function_id, e.event_id, e.event_ids, e.correlation_id FROM ended e CROSS JOIN recorded

-- name: run_get
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts, r.correlation_id,
       f.config ? 'batchEvents' AS is_batch
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
WHERE r.id = %(run_id)s

-- name: run_list_for_event
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
-- a run's first event by runs_event, the others of a batch by runs_batch_events
WHERE r.event_id = %(event_id)s OR (cardinality(r.event_ids) > 1 AND r.event_ids @> ARRAY[%(event_id)s::text])
ORDER BY r.id

-- name: run_list
-- Newest first, a page at a time. Live runs are read from live_runs and failed ones from
-- run_failures (a one-time filter skips the branches the status rules out), everything else by
-- the runs' own ids, so a page reads about as many runs as it shows; a time range also bounds the
-- ids (ten minutes' margin for the clocks of the hosts that made them).
WITH fn AS (
    SELECT f.id FROM pgqueue.functions f
    WHERE %(function)s::text IS NOT NULL AND (f.slug = %(function)s OR f.id::text = %(function)s)
), bounds AS (
    SELECT coalesce(pgqueue.ulid_bound_v1(greatest(%(created_after)s::timestamptz - interval '10 minutes', 'epoch')), '') AS lo,
           least(coalesce(%(before_id)s::text, '~'),
                 coalesce(pgqueue.ulid_bound_v1(%(created_before)s::timestamptz + interval '10 minutes'), '~')) AS hi
), picked AS (
    (SELECT l.run_id AS id FROM pgqueue.live_runs l JOIN pgqueue.runs r1 ON r1.id = l.run_id, bounds b
     WHERE %(status)s::text IN ('queued', 'running') AND l.ended_at IS NULL
       AND l.run_id >= b.lo AND l.run_id < b.hi AND r1.status = %(status)s::pgqueue.run_status
       AND (%(function)s::text IS NULL OR l.function_id IN (SELECT fn.id FROM fn))
     ORDER BY l.run_id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT x.run_id FROM pgqueue.run_failures x, bounds b
     WHERE %(status)s::text = 'failed' AND x.run_id >= b.lo AND x.run_id < b.hi
       AND (%(function)s::text IS NULL OR x.function_id IN (SELECT fn.id FROM fn))
     ORDER BY x.run_id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT r.id FROM pgqueue.runs r, bounds b
     WHERE (%(status)s::text IS NULL OR %(status)s::text NOT IN ('queued', 'running', 'failed'))
       AND r.id >= b.lo AND r.id < b.hi
       AND (%(status)s::text IS NULL OR r.status = %(status)s::pgqueue.run_status)
       AND (%(function)s::text IS NULL OR r.function_id IN (SELECT fn.id FROM fn))
     ORDER BY r.id DESC LIMIT %(limit)s)
)
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts
FROM picked p
JOIN pgqueue.runs r ON r.id = p.id
JOIN pgqueue.functions f ON f.id = r.function_id
WHERE (%(status)s::text IS NULL OR r.status = %(status)s::pgqueue.run_status)
  AND (%(before_id)s::text IS NULL OR r.id < %(before_id)s)
  AND (%(created_after)s::timestamptz IS NULL OR r.created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR r.created_at < %(created_before)s)
ORDER BY r.id DESC
LIMIT %(limit)s

-- name: run_cancel
WITH ended AS (
    UPDATE pgqueue.runs
    SET status = 'cancelled', ended_at = now(), started_at = coalesce(started_at, now()),
        error = jsonb_build_object('name', 'Cancelled', 'message', %(reason)s::text)
    WHERE id = %(run_id)s AND status IN ('queued', 'running')
    RETURNING id, function_id, event_id, event_ids, correlation_id, status, created_at, ended_at
), recorded AS (
    SELECT pgqueue.runs_ended_v1(array_agg(id), array_agg(function_id), array_agg(status::text),
                                 array_agg(created_at), array_agg(ended_at)) AS n FROM ended
)
SELECT e.id, e.function_id, e.event_id, e.event_ids, e.correlation_id FROM ended e CROSS JOIN recorded

-- name: idempotency_claim
SELECT pgqueue.idempotency_claim_v1(%(function_id)s, %(key)s, %(run_id)s) AS claimed

-- name: singleton_claim
SELECT pgqueue.singleton_claim_v1(%(function_id)s, %(key)s, %(run_id)s) AS holder

-- name: singleton_take
SELECT pgqueue.singleton_take_v1(%(function_id)s, %(key)s, %(run_id)s)

-- name: singleton_release
DELETE FROM pgqueue.singletons WHERE run_id = %(run_id)s

-- name: run_set_correlation
UPDATE pgqueue.runs SET correlation_id = %(correlation_id)s WHERE id = %(run_id)s

-- name: run_page
-- GraphQL `runs`: runs of a time range (by the time `time_field` names: queued, started or ended),
-- filtered by functions, apps and statuses, in keyset pages by id (a ULID: queued order), newest
-- first. created_at < until bounds every time field (a run starts and ends after it is queued), so
-- the walk starts at `until` on runs_created.
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts, r.correlation_id,
       f.config ? 'batchEvents' AS is_batch
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
WHERE r.created_at < %(until)s
  AND (%(time_field)s <> 'queued' OR r.created_at >= %(from)s)
  AND (%(time_field)s <> 'started' OR (r.started_at >= %(from)s AND r.started_at < %(until)s))
  AND (%(time_field)s <> 'ended' OR (r.ended_at >= %(from)s AND r.ended_at < %(until)s))
  AND (%(statuses)s::text[] IS NULL OR r.status::text = ANY(%(statuses)s::text[]))
  AND (%(function_ids)s::uuid[] IS NULL OR r.function_id = ANY(%(function_ids)s::uuid[]))
  AND (%(app_ids)s::uuid[] IS NULL OR f.app_id = ANY(%(app_ids)s::uuid[]))
  AND (%(before_id)s::text IS NULL OR r.id < %(before_id)s)
ORDER BY r.id DESC
LIMIT %(limit)s

-- name: run_page_oldest_first
-- run_page in the other direction (orderBy direction ASC): oldest first, pages after `after_id`.
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts, r.correlation_id,
       f.config ? 'batchEvents' AS is_batch
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
WHERE r.created_at < %(until)s
  AND (%(time_field)s <> 'queued' OR r.created_at >= %(from)s)
  AND (%(time_field)s <> 'started' OR (r.started_at >= %(from)s AND r.started_at < %(until)s))
  AND (%(time_field)s <> 'ended' OR (r.ended_at >= %(from)s AND r.ended_at < %(until)s))
  AND (%(statuses)s::text[] IS NULL OR r.status::text = ANY(%(statuses)s::text[]))
  AND (%(function_ids)s::uuid[] IS NULL OR r.function_id = ANY(%(function_ids)s::uuid[]))
  AND (%(app_ids)s::uuid[] IS NULL OR f.app_id = ANY(%(app_ids)s::uuid[]))
  AND (%(after_id)s::text IS NULL OR r.id > %(after_id)s)
ORDER BY r.id
LIMIT %(limit)s

-- name: run_page_count
-- How many runs run_page's filter matches, counted up to %(cap)s (a count is a walk of the range).
SELECT count(*) AS runs FROM (
    SELECT 1
    FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
    WHERE r.created_at < %(until)s
      AND (%(time_field)s <> 'queued' OR r.created_at >= %(from)s)
      AND (%(time_field)s <> 'started' OR (r.started_at >= %(from)s AND r.started_at < %(until)s))
      AND (%(time_field)s <> 'ended' OR (r.ended_at >= %(from)s AND r.ended_at < %(until)s))
      AND (%(statuses)s::text[] IS NULL OR r.status::text = ANY(%(statuses)s::text[]))
      AND (%(function_ids)s::uuid[] IS NULL OR r.function_id = ANY(%(function_ids)s::uuid[]))
      AND (%(app_ids)s::uuid[] IS NULL OR f.app_id = ANY(%(app_ids)s::uuid[]))
    LIMIT %(cap)s
) matched

-- name: run_search_page
-- One page of a search (pgqueue/runs/search.py): the runs of a time window, newest first, by their
-- ids (the window bounds the ids, ten minutes' margin for the clocks of the hosts that made them;
-- `before_id` is the page's cursor), each with its triggering event. `contains`, when given, is a
-- part every matching event's data holds (equalities of the expression), checked here so only
-- candidates come back; the expression itself is evaluated on them by the caller.
SELECT r.id, r.function_id, f.slug AS function_slug, f.app_id, r.event_id, r.event_ids, r.status::text AS status,
       r.output, r.error, r.created_at, r.started_at, r.ended_at, r.max_attempts,
       e.name AS event_name, e.data AS event_data, e."user" AS event_user, e.ts AS event_ts, e.v AS event_v,
       e.external_id AS event_external_id, e.sessions AS event_sessions
FROM pgqueue.runs r
JOIN pgqueue.functions f ON f.id = r.function_id
LEFT JOIN pgqueue.events e ON e.id = r.event_id
WHERE r.id >= pgqueue.ulid_bound_v1(greatest(%(after)s::timestamptz - interval '10 minutes', 'epoch'))
  AND r.id < least(coalesce(%(before_id)s::text, '~'),
                   pgqueue.ulid_bound_v1(%(before)s::timestamptz + interval '10 minutes'))
  AND r.created_at >= %(after)s AND r.created_at < %(before)s
  AND (%(function_id)s::uuid IS NULL OR r.function_id = %(function_id)s::uuid)
  AND (%(status)s::text IS NULL OR r.status = %(status)s::pgqueue.run_status)
  AND (%(contains)s::jsonb IS NULL OR e.data @> %(contains)s::jsonb)
ORDER BY r.id DESC
LIMIT %(limit)s

-- name: search_timeout
-- A search's statements stop after this long (its transaction's statement_timeout).
SELECT set_config('statement_timeout', %(ms)s::text, true)
