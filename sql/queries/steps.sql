-- name: step_record
-- First stored output wins: a duplicate (zombie worker, replayed response) changes nothing.
INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
VALUES (%(run_id)s, %(step_id)s, %(name)s, %(op)s, %(memo)s::jsonb, %(attempt)s)
ON CONFLICT (run_id, step_id) DO NOTHING
RETURNING seq

-- name: step_list
SELECT step_id, name, op, memo, attempt, created_at, seq
FROM pgqueue.steps WHERE run_id = %(run_id)s ORDER BY seq

-- name: step_memo_map
SELECT coalesce(jsonb_object_agg(step_id, memo), '{}'::jsonb) AS steps FROM pgqueue.steps WHERE run_id = %(run_id)s

-- name: attempt_record
INSERT INTO pgqueue.attempts (run_id, item_id, step_id, attempt, outcome, status_code, error, started_at)
VALUES (%(run_id)s, %(item_id)s, %(step_id)s, %(attempt)s, %(outcome)s, %(status_code)s, %(error)s::jsonb, %(started_at)s)

-- name: attempt_list
SELECT id, item_id, step_id, attempt, outcome, status_code, error, started_at, ended_at
FROM pgqueue.attempts WHERE run_id = %(run_id)s ORDER BY id
