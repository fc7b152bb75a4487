-- Inspection views: a stable, documented contract over the internal tables (which may change
-- between versions), for psql, BI tools and a read-only role (sql/grants/readonly.sql). Re-applied
-- by the migrator on every `pgqueue migrate`; CREATE OR REPLACE VIEW may only append columns, so
-- new columns go at the end. Every view reads the hot tables through their indexes and takes only
-- ACCESS SHARE locks: safe to poll every 10-60 s. Do not read them inside long transactions (an
-- old snapshot holds back vacuum of the queue). Examples in docs/sql.md.

-- pgqueue.queue_depth: queue items per function and status.
--   due       available and run_at has passed: waiting for a worker (or for flow control)
--   retrying  available after a failed attempt, waiting out its backoff
--   scheduled available in the future: sleeps, waitForEvent/invoke timeouts, delayed calls
--   leased    a worker holds it: a call is in flight (lease_expires_at in pgqueue.active_leases)
--   paused    held while its function is paused; released in order when it is resumed
-- Functions with nothing queued have no rows.
CREATE OR REPLACE VIEW pgqueue.queue_depth AS
SELECT q.function_id,
       f.slug AS function_slug,
       a.name AS app_name,
       s.status,
       count(*) AS items,
       count(DISTINCT q.run_id) AS runs,
       min(q.run_at) AS oldest_run_at,
       greatest(extract(epoch FROM now() - min(q.run_at)), 0)::double precision AS oldest_age_s
FROM pgqueue.queue_items q
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN q.state = 'leased' THEN 'leased'
               WHEN q.blocked AND starts_with(q.blocked_key, '$paused:') THEN 'paused'
               WHEN q.run_at <= now() THEN 'due'
               WHEN q.attempt > 0 THEN 'retrying'
               ELSE 'scheduled'
           END AS status
) s
LEFT JOIN pgqueue.functions f ON f.id = q.function_id
LEFT JOIN pgqueue.apps a ON a.id = f.app_id
GROUP BY q.function_id, f.slug, a.name, s.status;

COMMENT ON VIEW pgqueue.queue_depth IS
    'Queue items per function and status (due, retrying, scheduled, leased, paused), with the oldest run_at.';

-- pgqueue.active_leases: every item a worker holds right now. `expired` leases are what the
-- rescuer hands back to the queue (within a few seconds); a lease is extended while its call runs.
CREATE OR REPLACE VIEW pgqueue.active_leases AS
SELECT q.id AS item_id,
       q.run_id,
       q.function_id,
       f.slug AS function_slug,
       q.kind,
       q.step_id,
       q.step_name,
       q.attempt,
       q.max_attempts,
       q.leased_by,
       q.leased_at,
       q.lease_expires_at,
       extract(epoch FROM q.lease_expires_at - now())::double precision AS expires_in_s,
       q.lease_expires_at < now() AS expired
FROM pgqueue.queue_items q
LEFT JOIN pgqueue.functions f ON f.id = q.function_id
WHERE q.state = 'leased';

COMMENT ON VIEW pgqueue.active_leases IS 'Queue items currently leased by a worker, with lease expiry.';

-- pgqueue.stuck_runs: live runs that are not moving, one row per run and reason.
--   lease_expired  a worker lost its lease (crash, pause, network) more than 30 s ago and the
--                  rescuer has not handed the item back: is any `pgqueue serve|worker` running?
--   overdue        a call has been due for more than 5 minutes: workers are saturated, absent,
--                  or flow control (concurrency, throttle) is holding it back (not the work a
--                  paused function holds: that waits for its resume)
--   orphaned       queued/running with no queue item and no pause: nothing will ever advance it
--                  (a bug or a manual edit); cancel it (pgqueue.cancel_run) or retry it
CREATE OR REPLACE VIEW pgqueue.stuck_runs AS
SELECT q.run_id,
       q.function_id,
       f.slug AS function_slug,
       r.status::text AS status,
       'lease_expired'::text AS reason,
       q.lease_expires_at AS since,
       extract(epoch FROM now() - q.lease_expires_at)::double precision AS age_s,
       format('item %s (%s) leased by %s', q.id, q.step_id, coalesce(q.leased_by, '?')) AS detail
FROM pgqueue.queue_items q
JOIN pgqueue.runs r ON r.id = q.run_id
LEFT JOIN pgqueue.functions f ON f.id = q.function_id
WHERE q.state = 'leased' AND q.lease_expires_at < now() - interval '30 seconds'
UNION ALL
SELECT q.run_id,
       q.function_id,
       f.slug,
       r.status::text,
       'overdue',
       q.run_at,
       extract(epoch FROM now() - q.run_at)::double precision,
       format('item %s (%s, attempt %s) due since %s', q.id, q.step_id, q.attempt + 1, q.run_at)
FROM pgqueue.queue_items q
JOIN pgqueue.runs r ON r.id = q.run_id
LEFT JOIN pgqueue.functions f ON f.id = q.function_id
WHERE q.state = 'available' AND q.run_at < now() - interval '5 minutes'
  AND NOT (q.blocked AND starts_with(q.blocked_key, '$paused:'))
UNION ALL
SELECT r.id,
       r.function_id,
       f.slug,
       r.status::text,
       'orphaned',
       coalesce(r.started_at, r.created_at),
       extract(epoch FROM now() - coalesce(r.started_at, r.created_at))::double precision,
       'live run with no queue item and no pause'
FROM pgqueue.live_runs l   -- the live runs, not a scan of every run
JOIN pgqueue.runs r ON r.id = l.run_id
LEFT JOIN pgqueue.functions f ON f.id = r.function_id
WHERE l.ended_at IS NULL AND r.status IN ('queued', 'running')
  AND r.created_at < now() - interval '1 minute'
  AND NOT EXISTS (SELECT 1 FROM pgqueue.queue_items q WHERE q.run_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM pgqueue.pauses p WHERE p.run_id = r.id);

COMMENT ON VIEW pgqueue.stuck_runs IS
    'Live runs that are not moving: expired leases not rescued, overdue calls, orphaned runs.';

-- Payload columns (event data, step and run outputs, error messages) are in the *_payload views
-- only: sql/grants/readonly.sql grants every view but those to the read-only role, and
-- sql/grants/payload.sql grants those to a role of their own (what a step returns or an error
-- says can be a customer's data or an API key). The views without the suffix read their payload
-- twin with its owner's rights and leave those columns out.

-- pgqueue.recent_failures_payload: runs that failed in the last 24 hours, newest first, with the
-- error and how many attempts failed on the way.
CREATE OR REPLACE VIEW pgqueue.recent_failures_payload AS
SELECT r.id AS run_id,
       r.function_id,
       f.slug AS function_slug,
       a.name AS app_name,
       r.event_id,
       r.error ->> 'name' AS error_name,
       coalesce(r.error ->> 'message', r.error #>> '{}') AS error_message,
       r.error,
       (SELECT count(*) FROM pgqueue.attempts t WHERE t.run_id = r.id AND t.outcome <> 'ok') AS failed_attempts,
       r.created_at,
       r.ended_at
FROM pgqueue.run_failures x  -- the failed runs, not a scan of every run
JOIN pgqueue.runs r ON r.id = x.run_id
LEFT JOIN pgqueue.functions f ON f.id = r.function_id
LEFT JOIN pgqueue.apps a ON a.id = f.app_id
WHERE x.ended_at >= now() - interval '24 hours' AND r.status = 'failed'
ORDER BY r.ended_at DESC, r.id DESC;

COMMENT ON VIEW pgqueue.recent_failures_payload IS
    'Runs that failed in the last 24 hours, newest first, with their error (payload: sql/grants/payload.sql).';

-- pgqueue.recent_failures: the same without the error's message and body (error_name stays).
CREATE OR REPLACE VIEW pgqueue.recent_failures AS
SELECT run_id, function_id, function_slug, app_name, event_id, error_name, failed_attempts, created_at, ended_at
FROM pgqueue.recent_failures_payload
ORDER BY ended_at DESC, run_id DESC;

COMMENT ON VIEW pgqueue.recent_failures IS
    'Runs that failed in the last 24 hours, newest first (error name only; messages in recent_failures_payload).';

-- pgqueue.calls_payload: every call of an app (and every wake-up) of every run — always filter on
-- run_id.
-- A call that ended in a stored step or in the run's value is recorded on that step (started_at)
-- or run (final_call_*), not as an attempts row (half a run's writes were attempts rows): those
-- read as outcome ok, status 206 or 200, step_id the step's own (its planned item) or 'step' (a
-- discovery call).
-- `seq` orders calls that started at the same time (attempts: their id; the others: negative).
-- item_id is NULL for a call made on the lease of the call before it (the worker continuing a run
-- at once, pgqueue.complete_v2): those calls never went through the queue as items of their own.
CREATE OR REPLACE VIEW pgqueue.calls_payload AS
SELECT t.run_id, t.id AS seq, t.item_id, t.step_id, t.attempt, t.outcome, t.status_code, t.error,
       t.started_at, t.ended_at
FROM pgqueue.attempts t
UNION ALL
SELECT s.run_id, -s.seq, s.call_item_id, CASE WHEN s.call_planned THEN s.step_id ELSE 'step' END, s.attempt,
       'ok'::text, 206, NULL::jsonb, s.started_at, s.created_at
FROM pgqueue.steps s
WHERE s.started_at IS NOT NULL
UNION ALL
SELECT r.id, -9223372036854775807, r.final_call_item_id, 'step'::text, r.final_call_attempt, 'ok'::text, 200,
       NULL::jsonb, r.final_call_started_at, r.ended_at
FROM pgqueue.runs r
WHERE r.final_call_started_at IS NOT NULL;

COMMENT ON VIEW pgqueue.calls_payload IS
    'Every call of an app and wake-up of a run, with its error (payload: sql/grants/payload.sql). Filter on run_id.';

-- pgqueue.calls: the same without the error's body (error_name stays).
CREATE OR REPLACE VIEW pgqueue.calls AS
SELECT run_id, seq, item_id, step_id, attempt, outcome, status_code, error ->> 'name' AS error_name, started_at,
       ended_at
FROM pgqueue.calls_payload;

COMMENT ON VIEW pgqueue.calls IS
    'Every call of an app and wake-up of a run (error name only; bodies in calls_payload). Filter on run_id.';

-- pgqueue.run_timeline_payload: what happened to a run, in order — always filter on run_id (each
-- branch then reads one run through its index). `entry` is one of
--   queued    the run was created (at = created_at)
--   attempt   one call of the app or one wake-up (sleep, timeout): outcome ok | retry | failed |
--             discarded, with status_code, error and duration_ms
--   step      a step's memoised result (op, name, output or error), at the time it was stored;
--             a memo of exactly {"data": x} shows x, exactly {"error": e} is a failed step
--   ended     the run ended (status completed | failed | cancelled, with output or error)
-- Order by (at, seq): seq breaks ties within one timestamp.
CREATE OR REPLACE VIEW pgqueue.run_timeline_payload AS
SELECT r.id AS run_id, r.created_at AS at, 0::bigint AS seq, 'queued'::text AS entry,
       NULL::text AS step_id, NULL::text AS step_name, NULL::text AS op, NULL::integer AS attempt,
       NULL::text AS outcome, NULL::integer AS status_code, NULL::bigint AS duration_ms,
       NULL::jsonb AS output, NULL::jsonb AS error, 'queued'::text AS status
FROM pgqueue.runs r
UNION ALL
SELECT t.run_id, t.started_at, t.seq, 'attempt', t.step_id, s.name, NULL, t.attempt + 1, t.outcome,
       t.status_code, (extract(epoch FROM t.ended_at - t.started_at) * 1000)::bigint, NULL, t.error, NULL
FROM pgqueue.calls_payload t
LEFT JOIN pgqueue.steps s ON s.run_id = t.run_id AND s.step_id = t.step_id
UNION ALL
SELECT s.run_id, s.created_at, s.seq, 'step', s.step_id, s.name, s.op, s.attempt + 1,
       CASE WHEN m.shape = 'error' THEN 'failed' ELSE 'ok' END,
       NULL, NULL,
       CASE m.shape WHEN 'data' THEN s.memo -> 'data' WHEN 'error' THEN NULL ELSE s.memo END,
       CASE WHEN m.shape = 'error' THEN s.memo -> 'error' END,
       NULL
FROM pgqueue.steps s
CROSS JOIN LATERAL (
    -- {"data": x} is a step output, {"error": e} a failed step; anything else (an event for
    -- waitForEvent, null for a sleep) is shown as it is
    SELECT CASE WHEN jsonb_typeof(s.memo) <> 'object' THEN 'value'
                WHEN s.memo ? 'data' AND s.memo - 'data' = '{}'::jsonb THEN 'data'
                WHEN s.memo ? 'error' AND s.memo - 'error' = '{}'::jsonb THEN 'error'
                ELSE 'value' END AS shape
) m
UNION ALL
SELECT r.id, r.ended_at, 9223372036854775807, 'ended', NULL, NULL, NULL, NULL, NULL, NULL,
       (extract(epoch FROM r.ended_at - r.created_at) * 1000)::bigint, r.output, r.error, r.status::text
FROM pgqueue.runs r
WHERE r.ended_at IS NOT NULL;

COMMENT ON VIEW pgqueue.run_timeline_payload IS
    'Per-run history with outputs and errors (payload: sql/grants/payload.sql). Filter on run_id; order by at, seq.';

-- pgqueue.run_timeline: the same history without outputs and error bodies; error_name is the
-- error's name (`name` of an error object), e.g. UnsignedResponse, StepError, TypeError.
CREATE OR REPLACE VIEW pgqueue.run_timeline AS
SELECT run_id, at, seq, entry, step_id, step_name, op, attempt, outcome, status_code, duration_ms, status,
       error ->> 'name' AS error_name
FROM pgqueue.run_timeline_payload;

COMMENT ON VIEW pgqueue.run_timeline IS
    'Per-run history: queued, each attempt, each memoised step, ended (no outputs or error bodies). Filter on run_id.';

-- pgqueue.app_concurrency (adaptive concurrency per app) is defined by migration 0014 with its table:
-- this file is also replayed over schemas migrated part of the way.
