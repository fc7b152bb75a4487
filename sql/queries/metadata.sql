-- Run and step metadata (pgqueue.run_metadata; pgqueue/store/run_metadata.py).

-- name: run_metadata_put
-- The caller holds the run's row lock (run_lock); raises program_limit_exceeded over the run's limit.
SELECT pgqueue.run_metadata_put_v1(%(run_id)s, %(updates)s::jsonb, %(max_run_bytes)s) AS total

-- name: run_metadata_list
-- A run's metadata by its primary key: the run's own first, then each step's in the order written.
SELECT scope, step_id, attempt, span_id, kind, "values", size, created_at, updated_at
FROM pgqueue.run_metadata WHERE run_id = %(run_id)s
ORDER BY scope <> 'run', created_at, step_id, attempt, kind
