-- name: executor_kick_claim
-- One row is updated only when the last kick is older than the debounce window, so of many
-- concurrent API requests exactly one wins and sends the kick.
UPDATE pgqueue.executor_kicks SET last_kick_at = now()
WHERE id AND last_kick_at < now() - make_interval(secs => %(debounce_ms)s / 1000.0)
RETURNING last_kick_at

-- name: queue_metrics
-- What the tick publishes: work due now, leases held, and how long the oldest due item waited.
SELECT count(*) FILTER (WHERE q.state = 'available' AND q.run_at <= now()) AS due,
       count(*) FILTER (WHERE q.state = 'available' AND q.run_at > now()) AS scheduled,
       count(*) FILTER (WHERE q.state = 'leased') AS leased,
       coalesce(extract(epoch FROM now() - min(q.run_at) FILTER (
           WHERE q.state = 'available' AND q.run_at <= now())), 0)::float8 AS oldest_due_age_s,
       (SELECT count(*) FROM pgqueue.event_inbox) AS inbox
FROM pgqueue.queue_items q
