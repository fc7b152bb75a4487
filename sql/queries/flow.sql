-- name: flow_rate_limit_admit
SELECT pgqueue.rate_limit_admit_v2(%(key)s, %(limit)s, %(period_ms)s) AS admitted

-- name: flow_debounce_push
SELECT * FROM pgqueue.debounce_push_v2(%(function_id)s, %(key)s, %(event_id)s, %(period_s)s, %(timeout_s)s,
                                      %(shape)s::jsonb)

-- name: flow_debounce_open
SELECT pgqueue.debounce_open_v1(%(function_id)s, %(key)s, %(run_id)s)

-- name: flow_batch_append
SELECT pgqueue.batch_append_v2(%(function_id)s, %(key)s, %(event_id)s, %(max_size)s) AS run_id

-- name: flow_batch_open
SELECT pgqueue.batch_open_v1(%(function_id)s, %(key)s, %(run_id)s)

-- name: gcra_prune_idle
-- Throttle and rate-limit keys idle for over a minute: a key whose theoretical arrival time has
-- passed admits exactly as a key never seen (gcra_v2), so its row only takes space. A minute's
-- margin keeps a claim whose transaction began before this one from seeing its row vanish. No
-- index on tat (it would make every admission a non-HOT update): the rescuer runs this once a
-- minute, reading the table, which holds only the keys of the last minute once it runs.
WITH doomed AS (
    DELETE FROM pgqueue.gcra_state WHERE key IN (
        SELECT g.key FROM pgqueue.gcra_state g WHERE g.tat < now() - interval '1 minute'
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) AS pruned FROM doomed
