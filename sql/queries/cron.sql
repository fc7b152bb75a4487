-- name: cron_schedules_prune
-- Schedules whose cron trigger is gone (re-synced away, function archived or deleted).
DELETE FROM pgqueue.cron_schedules s
WHERE NOT EXISTS (
    SELECT 1 FROM pgqueue.function_triggers t
    JOIN pgqueue.functions f ON f.id = t.function_id
    WHERE t.function_id = s.function_id AND t.cron = s.cron AND f.archived_at IS NULL
)
RETURNING function_id, cron

-- name: cron_schedules_missing
-- Cron triggers without a schedule yet; `synced_at` anchors the first slot.
SELECT t.function_id, t.cron, f.updated_at AS synced_at
FROM pgqueue.function_triggers t
JOIN pgqueue.functions f ON f.id = t.function_id
WHERE t.cron IS NOT NULL AND f.archived_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM pgqueue.cron_schedules s WHERE s.function_id = t.function_id AND s.cron = t.cron
  )

-- name: cron_schedule_insert
INSERT INTO pgqueue.cron_schedules (function_id, cron, next_at)
VALUES (%(function_id)s, %(cron)s, %(next_at)s)
ON CONFLICT (function_id, cron) DO NOTHING
RETURNING function_id

-- name: cron_due
-- Due schedules, locked so concurrent schedulers split them instead of racing for them.
SELECT s.function_id, s.cron, s.next_at, f.slug, f.retries, f.config, f.paused_at
FROM pgqueue.cron_schedules s
JOIN pgqueue.functions f ON f.id = s.function_id
WHERE s.next_at <= %(now)s AND f.archived_at IS NULL
ORDER BY s.next_at
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED

-- name: cron_schedule_advance
UPDATE pgqueue.cron_schedules SET next_at = %(next_at)s
WHERE function_id = %(function_id)s AND cron = %(cron)s

-- name: cron_tick_claim
-- The slot's one chance to fire: zero rows means another scheduler already took it.
INSERT INTO pgqueue.cron_ticks (function_id, scheduled_at, cron, run_id, skip_reason)
VALUES (%(function_id)s, %(scheduled_at)s, %(cron)s, %(run_id)s, %(skip_reason)s)
ON CONFLICT (function_id, scheduled_at) DO NOTHING
RETURNING function_id

-- name: cron_tick_skip
-- A claimed slot whose run was not admitted (idempotency, singleton): keep the slot, say why.
UPDATE pgqueue.cron_ticks SET run_id = NULL, skip_reason = %(reason)s
WHERE function_id = %(function_id)s AND scheduled_at = %(scheduled_at)s

-- name: cron_ticks_prune
-- Fired slots only matter while a scheduler could still fire them again; keep a week for history.
DELETE FROM pgqueue.cron_ticks
WHERE (function_id, scheduled_at) IN (
    SELECT function_id, scheduled_at FROM pgqueue.cron_ticks
    WHERE created_at < now() - make_interval(secs => %(retention_s)s)
    ORDER BY created_at
    LIMIT %(limit)s
)
