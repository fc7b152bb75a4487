-- name: outbox_send_event
-- The caller's own transaction: see sql/functions/outbox.sql.
SELECT pgqueue.send_event(%s, %s, %s, %s)

-- name: outbox_send_events
SELECT pgqueue.send_events(%s)
