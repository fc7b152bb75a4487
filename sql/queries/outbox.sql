-- name: outbox_send_event
-- The caller's own transaction: see sql/functions/outbox.sql.
SELECT pgqueue.send_event(%(name)s, %(data)s::jsonb, %(id)s, %(ts)s::timestamptz)

-- name: outbox_send_events
SELECT pgqueue.send_events(%(events)s::jsonb)

-- name: outbox_send_signal
-- The caller's own transaction: see sql/functions/signals.sql.
SELECT pgqueue.send_signal(%(signal)s, %(data)s::jsonb)
