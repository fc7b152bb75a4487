-- name: step_record
-- First stored output wins: a duplicate (zombie worker, replayed response) changes nothing.
-- The run's step count and state size move with it (limits are checked by the caller).
WITH s AS (
    INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
    VALUES (%(run_id)s, %(step_id)s, %(name)s, %(op)s, %(memo)s::jsonb, %(attempt)s)
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING run_id, octet_length(memo::text) AS size
)
UPDATE pgqueue.runs r
SET step_count = r.step_count + 1, state_bytes = r.state_bytes + s.size
FROM s WHERE r.id = s.run_id
RETURNING r.step_count, r.state_bytes

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

-- name: step_checkpoint
-- Steps a running call reports (pgqueue/executor/checkpoint.py), fenced by its lease, in one statement.
SELECT * FROM pgqueue.checkpoint_store_v1(%(run_id)s, %(item_id)s, %(lease_token)s, %(fn_id)s, %(steps)s::jsonb)

-- name: step_stored_among
-- Which of these steps of a run are stored already (the metadata of a step reported again is not
-- written again).
SELECT step_id FROM pgqueue.steps WHERE run_id = %(run_id)s AND step_id = ANY (%(step_ids)s::text[])
