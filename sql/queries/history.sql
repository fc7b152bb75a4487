-- A run's history as its trace reads it (pgqueue/store/history.py, pgqueue/runs/trace.py): the run,
-- every call and wake-up (attempts), every stored step, the work still pending, and single outputs
-- by key. Every statement reads one run through its own keys (runs by id, attempts and steps by
-- their run, the queue_items keys, pauses_run): its cost follows the run's size, never the tables'.

-- name: history_run
-- The run without its output (outputs are read one at a time, by history_run_output). `now` is
-- the database clock, so spans still open are measured against the same clock that stamped them.
SELECT r.id, r.function_id, f.slug AS function_slug, f.name AS function_name, f.app_id,
       f.config ? 'batchEvents' AS is_batch,
       r.event_id, r.event_ids, r.status::text AS status, r.created_at, r.started_at, r.ended_at,
       r.max_attempts, r.correlation_id, r.replay_of,
       (SELECT count(*) FROM pgqueue.steps s WHERE s.run_id = r.id)::integer AS step_count, now() AS now
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
WHERE r.id = %(run_id)s

-- name: history_attempts
-- Every call of the app and every wake-up (sleep, timeout) of the run, in the order they started
-- (pgqueue.calls_payload: attempts rows, and the successful calls recorded with their step or run).
-- A call made on the lease of the call before it (pgqueue.complete_v2's `continued`) has no item
-- id of its own: its seq (negative) stands in, so each call stays a group of its own.
SELECT seq AS id, coalesce(item_id, seq) AS item_id, step_id, attempt, outcome, status_code, error IS NOT NULL AS has_error,
       started_at, ended_at
FROM pgqueue.calls_payload
WHERE run_id = %(run_id)s
ORDER BY started_at, seq
LIMIT %(limit)s

-- name: history_steps
-- Every stored step without its memo, only what the trace shows of it: the memo's shape ({"data": x}
-- an output, {"error": e} a failure, null a slept sleep or a timed-out wait, anything else the event
-- a wait matched), the matched event's id and name, the error's name. The op says the shape of
-- step.run memos (StepRun {"data"}, StepFailed {"error"}, pgqueue/executor/apply.py) and sleeps'
-- (null), so their memos (up to 4 MB each) are never read here; CASE reads the memo of the others
-- only (waits, invokes, signals).
SELECT s.step_id, s.name, s.op, s.seq, s.attempt, s.created_at, m.shape,
       CASE WHEN s.op = 'InvokeFunction' AND m.shape = 'error' THEN s.memo -> 'error' ->> 'name' END AS error_name,
       CASE WHEN s.op = 'WaitForEvent' AND m.shape = 'value' THEN s.memo ->> 'id' END AS event_id,
       CASE WHEN s.op = 'WaitForEvent' AND m.shape = 'value' THEN s.memo ->> 'name' END AS event_name
FROM pgqueue.steps s
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.op IN ('StepRun', 'Step') THEN 'data'
                WHEN s.op = 'StepFailed' THEN 'error'
                WHEN s.op = 'Sleep' THEN 'null'
                WHEN jsonb_typeof(s.memo) = 'null' THEN 'null'
                WHEN jsonb_typeof(s.memo) <> 'object' THEN 'value'
                WHEN s.memo ? 'data' AND s.memo - 'data' = '{}'::jsonb THEN 'data'
                WHEN s.memo ? 'error' AND s.memo - 'error' = '{}'::jsonb THEN 'error'
                ELSE 'value' END AS shape
) m
WHERE s.run_id = %(run_id)s
ORDER BY s.seq
LIMIT %(limit)s

-- name: history_snapshot
-- A trace reads the run, its attempts, steps and pending work in one snapshot, so a step stored
-- between two of the reads cannot appear without the call that stored it.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- name: history_pending
-- What the run waits for now: its queue items (calls, sleeps, timeouts) and its pauses (waits,
-- invokes, signals; cancelOn listeners are not steps and are left out).
SELECT 'item'::text AS source, q.id AS item_id, q.kind, q.step_id, q.step_name, q.state::text AS state,
       q.attempt, q.created_at, q.run_at, q.leased_at, q.last_error IS NOT NULL AS has_error,
       NULL::text AS event_name, NULL::text AS expression, NULL::timestamptz AS expires_at,
       NULL::text AS signal
FROM pgqueue.queue_items q
WHERE q.run_id = %(run_id)s
UNION ALL
SELECT 'pause', p.id, p.kind, p.step_id, p.step_name, 'waiting', NULL, p.created_at, NULL, NULL, false,
       p.event_name, p.expression, p.expires_at, p.signal
FROM pgqueue.pauses p
WHERE p.run_id = %(run_id)s AND p.kind <> 'cancel'

-- name: history_run_output
SELECT r.status::text AS status, r.output, r.error FROM pgqueue.runs r WHERE r.id = %(run_id)s

-- name: history_step_output
SELECT s.op, s.memo FROM pgqueue.steps s WHERE s.run_id = %(run_id)s AND s.step_id = %(step_id)s

-- name: history_attempt_output
-- One call's error (retried or final); its item's pending retry keeps the last error on the item.
SELECT a.outcome, a.status_code, a.error FROM pgqueue.attempts a WHERE a.id = %(attempt_id)s AND a.run_id = %(run_id)s

-- name: history_item_output
SELECT q.last_error AS error FROM pgqueue.queue_items q WHERE q.id = %(item_id)s AND q.run_id = %(run_id)s

-- name: history_invoked_run
-- The run a step.invoke started: it carries the step's correlation id and was created while the
-- calling run's call was applied, so a short range of run ids holds it (ids are made with their
-- runs; ten minutes' margin for the clocks of the hosts that made them).
SELECT r.id, r.event_id, r.status::text AS status, f.slug AS function_slug
FROM pgqueue.runs r JOIN pgqueue.functions f ON f.id = r.function_id
WHERE r.id >= pgqueue.ulid_bound_v1(greatest(%(after)s::timestamptz - interval '10 minutes', 'epoch'))
  AND r.id < pgqueue.ulid_bound_v1(%(before)s::timestamptz + interval '10 minutes')
  AND r.created_at >= %(after)s AND r.created_at <= %(before)s AND r.correlation_id = %(correlation_id)s
ORDER BY r.created_at DESC
LIMIT 1
