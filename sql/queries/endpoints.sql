-- name: endpoint_run_start
SELECT * FROM pgqueue.endpoint_run_start_v1(
    %(app_name)s, %(app_url)s, %(fn_slug)s, %(fn_name)s, %(retries)s, %(run_id)s, %(event_id)s,
    %(event_name)s, %(event_data)s::jsonb, %(event_ts)s, %(endpoint_url)s, %(endpoint_method)s, %(lease_until)s)

-- name: endpoint_item
-- The run and the call item its endpoint request holds (item columns NULL when the request no longer
-- holds one: the run went on without it, or its lease expired).
SELECT r.status::text AS run_status, r.endpoint_url IS NOT NULL AS is_endpoint, q.id, q.run_id, q.function_id,
       q.kind, q.step_id, q.step_name, q.attempt, q.max_attempts, q.lease_token, q.run_at
FROM pgqueue.runs r
LEFT JOIN pgqueue.queue_items q  -- the run's own items (`state::text`: see queue_lock_if_leased)
       ON q.run_id = r.id AND q.state::text = 'leased' AND q.leased_by = 'endpoint' AND q.lease_expires_at > now()
WHERE r.id = %(run_id)s

-- name: endpoint_extend_lease
-- by primary key (`state::text`: see queue_lock_if_leased)
UPDATE pgqueue.queue_items SET lease_expires_at = %(until)s
WHERE id = %(id)s AND state::text = 'leased' AND lease_token = %(lease_token)s

-- name: endpoint_run_result
SELECT status::text AS status, output, error FROM pgqueue.runs WHERE id = %(run_id)s
