-- Read side of the dashboard and the REST API's inspection endpoints, over the views in
-- sql/views/inspect.sql and the tables behind them.

-- name: inspect_metrics
SELECT * FROM pgqueue.metrics()

-- name: inspect_queue_depth
SELECT function_id, function_slug, app_name, status, items, runs, oldest_run_at, oldest_age_s
FROM pgqueue.queue_depth
WHERE %(function_id)s::uuid IS NULL OR function_id = %(function_id)s::uuid
ORDER BY function_slug, status

-- name: inspect_active_leases
SELECT item_id, run_id, function_id, function_slug, kind, step_id, step_name, attempt, max_attempts,
       leased_by, leased_at, lease_expires_at, expires_in_s, expired
FROM pgqueue.active_leases
ORDER BY lease_expires_at
LIMIT %(limit)s

-- name: inspect_stuck_runs
SELECT run_id, function_id, function_slug, status, reason, since, age_s, detail
FROM pgqueue.stuck_runs
ORDER BY since
LIMIT %(limit)s

-- name: inspect_recent_failures
SELECT run_id, function_id, function_slug, app_name, event_id, error_name, error_message, error,
       failed_attempts, created_at, ended_at
FROM pgqueue.recent_failures_payload
LIMIT %(limit)s

-- name: inspect_run_timeline
SELECT run_id, at, seq, entry, step_id, step_name, op, attempt, outcome, status_code, duration_ms,
       output, error, status
FROM pgqueue.run_timeline_payload
WHERE run_id = %(run_id)s
ORDER BY at, seq

-- name: inspect_functions
-- Every function with its app, for filters and GET /v1/functions (archived ones on request).
SELECT f.id, f.slug, f.name, f.url, f.config, f.retries, f.created_at, f.updated_at, f.archived_at, f.paused_at,
       f.app_id, a.name AS app_name
FROM pgqueue.functions f JOIN pgqueue.apps a ON a.id = f.app_id
WHERE (%(include_archived)s OR f.archived_at IS NULL)
ORDER BY a.name, f.slug

-- name: inspect_function_get
SELECT f.id, f.slug, f.name, f.url, f.config, f.retries, f.created_at, f.updated_at, f.archived_at, f.paused_at,
       f.app_id, a.name AS app_name, a.url AS app_url, a.synced_at AS app_synced_at, a.sync_error AS app_sync_error
FROM pgqueue.functions f JOIN pgqueue.apps a ON a.id = f.app_id
WHERE f.id::text = %(ref)s OR f.slug = %(ref)s
ORDER BY (f.id::text = %(ref)s) DESC
LIMIT 1

-- name: inspect_function_run_counts
-- A function's live runs by status (live_runs), and its runs that ended since a time by how they
-- ended (run_counts, per minute): never a count over all of its runs.
SELECT r.status::text AS status, count(*) AS runs
FROM pgqueue.live_runs l JOIN pgqueue.runs r ON r.id = l.run_id
WHERE l.function_id = %(function_id)s AND l.ended_at IS NULL
GROUP BY r.status
UNION ALL
SELECT x.status, x.runs FROM (
    SELECT unnest(ARRAY['completed', 'failed', 'cancelled']) AS status,
           unnest(ARRAY[sum(c.completed), sum(c.failed), sum(c.cancelled)])::bigint AS runs
    FROM pgqueue.run_counts c
    WHERE c.function_id = %(function_id)s AND c.minute >= date_trunc('minute', %(since)s::timestamptz)
) x WHERE x.runs > 0

-- name: inspect_runs_for_events
-- The runs each of a page of events started: a run's first event by runs_event, the others of a
-- batch by runs_batch_events (the GIN holds only runs of more than one event).
SELECT e.event_id, r.id, r.function_id, f.slug AS function_slug, r.status::text AS status,
       r.created_at, r.ended_at
FROM unnest(%(event_ids)s::text[]) AS e(event_id)
JOIN pgqueue.runs r ON r.event_id = e.event_id
                    OR (cardinality(r.event_ids) > 1 AND r.event_ids @> ARRAY[e.event_id::text])
JOIN pgqueue.functions f ON f.id = r.function_id
ORDER BY e.event_id, r.id

-- name: inspect_run_pending
-- What a live run is waiting on: its queue items (calls, sleeps, timeouts) and pauses.
SELECT 'item'::text AS source, q.kind, q.step_id, q.step_name, q.state::text AS state, q.run_at AS at,
       q.attempt, q.lease_expires_at, NULL::text AS event_name, NULL::text AS signal
FROM pgqueue.queue_items q WHERE q.run_id = %(run_id)s
UNION ALL
SELECT 'pause', p.kind, p.step_id, p.step_name, 'waiting', p.expires_at, NULL, NULL, p.event_name, p.signal
FROM pgqueue.pauses p WHERE p.run_id = %(run_id)s
ORDER BY at NULLS LAST

-- name: inspect_app_concurrency
SELECT app_id, app_name, workers, concurrency_limit, in_flight, min_worker_limit, max_worker_limit, updated_at
FROM pgqueue.app_concurrency
WHERE %(app_id)s::uuid IS NULL OR app_id = %(app_id)s::uuid
ORDER BY app_name, app_id

-- name: inspect_run_origin
-- Where a run comes from besides its event: the run it replays or reruns, the step.invoke that
-- started it (`<parent run>.<step>`).
SELECT r.replay_of, r.correlation_id FROM pgqueue.runs r WHERE r.id = %(run_id)s

-- name: inspect_run_failure_handlers
-- The runs that the failure of a run started (its onFailure handler, any function triggered by
-- inngest/function.failed): the event was stored with the run's end, so a short range of event ids
-- (events_name: name, id) holds it; ten minutes' margin for the clocks of the hosts that made them.
SELECT r.id, r.function_id, f.slug AS function_slug, r.status::text AS status, r.created_at
FROM pgqueue.events e
JOIN pgqueue.runs r ON r.event_id = e.id
JOIN pgqueue.functions f ON f.id = r.function_id
WHERE e.name = 'inngest/function.failed'
  AND e.id >= pgqueue.ulid_bound_v1(greatest(%(ended_at)s::timestamptz - interval '10 minutes', 'epoch'))
  AND e.id < pgqueue.ulid_bound_v1(%(ended_at)s::timestamptz + interval '10 minutes')
  AND e.data ->> 'run_id' = %(run_id)s
ORDER BY r.id
LIMIT 20

-- name: inspect_run_chart
-- Runs per time bucket (`bucket_s` seconds) since a time, overall or of one function: made,
-- completed, failed, cancelled, and the duration histogram of the runs that ended (25 buckets, see
-- pgqueue.run_counts_add_v1), all from the per-minute run_counts (its primary key, by minute):
-- never a count over runs.
WITH c AS (
    SELECT to_timestamp(floor(extract(epoch FROM c.minute) / %(bucket_s)s) * %(bucket_s)s) AS at,
           c.created, c.completed, c.failed, c.cancelled, c.duration_ms
    FROM pgqueue.run_counts c
    WHERE c.minute >= %(since)s AND (%(function_id)s::uuid IS NULL OR c.function_id = %(function_id)s::uuid)
), h AS (
    SELECT c.at, u.i, sum(u.n)::bigint AS n
    FROM c CROSS JOIN LATERAL unnest(c.duration_ms) WITH ORDINALITY AS u(n, i)
    GROUP BY c.at, u.i
)
SELECT t.at, t.created, t.completed, t.failed, t.cancelled,
       ARRAY(SELECT h.n FROM h WHERE h.at = t.at ORDER BY h.i) AS duration_ms
FROM (SELECT c.at, sum(c.created)::bigint AS created, sum(c.completed)::bigint AS completed,
             sum(c.failed)::bigint AS failed, sum(c.cancelled)::bigint AS cancelled
      FROM c GROUP BY c.at) t
ORDER BY t.at

-- name: inspect_live_count
-- Runs not over now, overall or of one function (live_runs: one row per live run).
SELECT count(*) AS live FROM pgqueue.live_runs l
WHERE l.ended_at IS NULL AND (%(function_id)s::uuid IS NULL OR l.function_id = %(function_id)s::uuid)

-- name: inspect_concurrency_in_use
-- Calls in flight now per function (leased queue items) against its concurrency limit (the
-- function's first `concurrency` entry; null: no limit of its own).
SELECT f.id AS function_id, f.slug AS function_slug,
       (SELECT count(*) FROM pgqueue.queue_items q WHERE q.function_id = f.id AND q.state = 'leased') AS in_use,
       CASE jsonb_typeof(f.config -> 'concurrency')
           WHEN 'number' THEN (f.config ->> 'concurrency')::integer
           WHEN 'array' THEN (f.config -> 'concurrency' -> 0 ->> 'limit')::integer
           WHEN 'object' THEN (f.config -> 'concurrency' -> 'fn' -> 0 ->> 'limit')::integer
       END AS concurrency_limit
FROM pgqueue.functions f
WHERE f.archived_at IS NULL AND (%(function_id)s::uuid IS NULL OR f.id = %(function_id)s::uuid)
ORDER BY in_use DESC, f.slug
LIMIT 20
