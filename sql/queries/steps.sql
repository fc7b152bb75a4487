-- name: step_record
-- First stored output wins: a duplicate (zombie worker, replayed response) changes nothing.
-- Returns the run's step count and state size with it (its steps' count and sum of sizes; the
-- subqueries see the steps before this one), for the caller to check the limits.
WITH s AS (
    INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
    VALUES (%(run_id)s, %(step_id)s, %(name)s, %(op)s, %(memo)s::jsonb, %(attempt)s)
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING size
)
SELECT t.n + 1 AS step_count, t.size + s.size AS state_bytes
FROM s CROSS JOIN (SELECT count(*)::integer AS n, coalesce(sum(x.size), 0)::bigint AS size
                   FROM pgqueue.steps x WHERE x.run_id = %(run_id)s) t

-- name: step_list
SELECT step_id, name, op, memo, attempt, created_at, seq
FROM pgqueue.steps WHERE run_id = %(run_id)s ORDER BY seq

-- name: step_memo_map
SELECT coalesce(jsonb_object_agg(step_id, memo), '{}'::jsonb) AS steps FROM pgqueue.steps WHERE run_id = %(run_id)s

-- name: step_mark_call
-- The call that produced a step (one step from one call), recorded on it instead of an attempts row.
UPDATE pgqueue.steps
SET started_at = %(started_at)s, call_item_id = %(item_id)s, call_planned = nullif(%(planned)s, false)
WHERE run_id = %(run_id)s AND step_id = %(step_id)s

-- name: attempt_record
INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, status_code, error, started_at)
VALUES (%(run_id)s, %(item_id)s, %(step_id)s, %(attempt)s, %(outcome)s, %(status_code)s, %(error)s::jsonb, %(started_at)s)

-- name: attempt_list
-- Every call of the run (pgqueue.calls_payload: attempts, and the calls recorded with their step or run).
SELECT seq AS id, item_id, step_id, attempt, outcome, status_code, error, started_at, ended_at
FROM pgqueue.calls_payload WHERE run_id = %(run_id)s ORDER BY started_at, seq

-- name: step_checkpoint
-- Steps a running call reports (pgqueue/executor/checkpoint.py), fenced by its lease, in one statement.
SELECT * FROM pgqueue.checkpoint_store_v1(%(run_id)s, %(item_id)s, %(lease_token)s, %(fn_id)s, %(steps)s::jsonb)

-- name: step_stored_among
-- Which of these steps of a run are stored already (the metadata of a step reported again is not
-- written again).
SELECT step_id FROM pgqueue.steps WHERE run_id = %(run_id)s AND step_id = ANY (%(step_ids)s::text[])
