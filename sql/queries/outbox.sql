-- name: outbox_send_event
-- The caller's own transaction: see sql/functions/outbox.sql.
SELECT pgqueue.send_event(%(name)s, %(data)s::jsonb, %(id)s, %(ts)s::timestamptz)

-- name: outbox_send_events
SELECT pgqueue.send_events(%(events)s::jsonb)
