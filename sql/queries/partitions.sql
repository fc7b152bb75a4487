-- History retention and partitions (sql/functions/history.sql): each call in its own transaction,
-- after history_lock_timeout, so a busy table makes it give up and retry on the next round.

-- name: partitions_lock_timeout
SELECT set_config('lock_timeout', %(ms)s::text, true)

-- name: partitions_due
SELECT pgqueue.history_partitions_due_v1(now(), make_interval(secs => %(ahead_s)s)) AS due

-- name: partitions_ensure
SELECT pgqueue.history_ensure_v1(now(), make_interval(secs => %(width_s)s), make_interval(secs => %(ahead_s)s)) AS made

-- name: partitions_expire
SELECT suffix, part, kept
FROM pgqueue.history_expire_v1(coalesce(%(now)s::timestamptz, now()), make_interval(secs => %(retention_s)s))

-- name: partitions_prune
SELECT runs_deleted, events_deleted
FROM pgqueue.history_prune_v1(coalesce(%(now)s::timestamptz, now()), make_interval(secs => %(retention_s)s),
                              %(limit)s)

-- name: partitions_list
SELECT suffix, lo, hi, starts_at, ends_at, runs_archived_at
FROM pgqueue.history_partitions ORDER BY starts_at

-- name: live_runs_reconcile
SELECT pgqueue.live_runs_reconcile_v1(%(limit)s) AS dropped

-- name: cancellations_prune
-- Bulk-cancellation records older than the cutoff (they only report what was cancelled).
DELETE FROM pgqueue.cancellations WHERE id IN (
    SELECT id FROM pgqueue.cancellations WHERE created_at < %(cutoff)s
    ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id
