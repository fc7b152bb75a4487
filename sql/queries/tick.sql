-- name: executor_kick_claim
-- Called after the caller's events committed. One row is updated only when the last kick is older
-- than the debounce window, or when an executor finished scanning since the last kick (it may
-- have looked before these events committed): of many concurrent API requests exactly one wins.
UPDATE pgqueue.executor_kicks SET last_kick_at = clock_timestamp()
WHERE id AND (last_kick_at < clock_timestamp() - make_interval(secs => %(debounce_ms)s / 1000.0)
              OR scan_ended_at >= last_kick_at)
RETURNING last_kick_at

-- name: executor_scan_ended
-- An executor is about to stop (or linger): kicks from now on go out. It then looks once more.
UPDATE pgqueue.executor_kicks SET scan_ended_at = clock_timestamp() WHERE id

-- name: executor_linger_claim
-- One executor at a time stays up for soon-due work; it renews its claim while it lingers.
UPDATE pgqueue.executor_kicks
SET lingerer = %(me)s, lingering_until = clock_timestamp() + make_interval(secs => %(seconds)s)
WHERE id AND (lingering_until < clock_timestamp() OR lingerer = %(me)s)
RETURNING lingering_until

-- name: executor_linger_release
UPDATE pgqueue.executor_kicks SET lingering_until = '-infinity' WHERE id AND lingerer = %(me)s

-- name: executor_next_wake
-- Seconds until the next timer or cron slot is due (negative: overdue), NULL when there is none.
-- Paused functions' work is not due (pgqueue.queue_next_due_at_v1).
SELECT extract(epoch FROM least(
           pgqueue.queue_next_due_at_v1(),
           (SELECT min(s.next_at) FROM pgqueue.cron_schedules s JOIN pgqueue.functions f ON f.id = s.function_id
            WHERE f.archived_at IS NULL AND f.paused_at IS NULL)
       ) - now())::float8 AS wait

-- name: queue_metrics
-- What the tick publishes: work due now, leases held, and how long the oldest due item waited.
-- Work a paused function holds is not due (it would keep the age alarm firing for a deliberate pause).
SELECT count(*) FILTER (WHERE q.state = 'available' AND q.run_at <= now() AND NOT q.held) AS due,
       count(*) FILTER (WHERE q.state = 'available' AND q.run_at > now()) AS scheduled,
       count(*) FILTER (WHERE q.state = 'leased') AS leased,
       coalesce(extract(epoch FROM now() - min(q.run_at) FILTER (
           WHERE q.state = 'available' AND q.run_at <= now() AND NOT q.held)), 0)::float8 AS oldest_due_age_s,
       (SELECT count(*) FROM pgqueue.event_inbox) AS inbox
FROM (SELECT q0.state, q0.run_at, coalesce(q0.blocked AND starts_with(q0.blocked_key, '$paused:'), false) AS held
      FROM pgqueue.queue_items q0) q
