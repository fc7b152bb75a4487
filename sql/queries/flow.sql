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
