-- Realtime messages: publish (sql/functions/realtime.sql), what an API process reads to fan
-- messages out to its subscribers, the dashboard's list and the rescuer's pruning.
--
-- `wire` is the message as subscribers receive it, built here so a process never decodes and
-- re-encodes the data (the Inngest message shape: {kind, channel, topic, data, created_at,
-- run_id?, stream_id?}, absent keys left out, which the JS SDK's schema needs). A durable
-- endpoint's stream (kind 'raw') is its text as the app sent it, in `raw`.

-- name: realtime_publish
SELECT message_id, topic, duplicate
FROM pgqueue.realtime_publish_v1(%(channel)s, %(topics)s::text[], %(kind)s, %(datas)s::jsonb[], %(run_id)s,
                                 %(stream_id)s, %(max_bytes)s, %(dedupe)s)

-- name: realtime_publish_many
-- Several publishes in one transaction, one WAL flush (pgqueue/realtime/publishing.py Batcher).
SELECT item, message_id, topic, duplicate FROM pgqueue.realtime_publish_many_v1(%(items)s::jsonb, %(max_bytes)s)

-- name: realtime_send
-- The caller's own transaction: pgqueue.publish(conn, ...).
SELECT pgqueue.publish(%(channel)s, %(topic)s, %(data)s::jsonb, %(run_id)s)

-- name: realtime_fetch_ids
-- The messages a NOTIFY named, of the channels this process has subscribers for.
SELECT m.id, m.channel, m.topic, m.kind,
       CASE WHEN m.kind = 'raw' THEN NULL ELSE (
           jsonb_build_object('kind', m.kind, 'channel', m.channel, 'topic', m.topic, 'data', m.data,
                              'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
           || CASE WHEN m.run_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('run_id', m.run_id) END
           || CASE WHEN m.stream_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('stream_id', m.stream_id) END
       )::text END AS wire,
       CASE WHEN m.kind = 'raw' THEN m.data #>> '{}' END AS raw
FROM pgqueue.realtime_messages m
WHERE m.id = ANY(%(ids)s::bigint[]) AND m.channel = ANY(%(channels)s::text[])
ORDER BY m.id

-- name: realtime_fetch_after
-- Each channel's messages after the last id seen there (a subscriber that joins, a listener that
-- reconnected, a process that polls): one index range per channel, at most `limit` each.
SELECT m.id, m.channel, m.topic, m.kind,
       CASE WHEN m.kind = 'raw' THEN NULL ELSE (
           jsonb_build_object('kind', m.kind, 'channel', m.channel, 'topic', m.topic, 'data', m.data,
                              'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
           || CASE WHEN m.run_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('run_id', m.run_id) END
           || CASE WHEN m.stream_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('stream_id', m.stream_id) END
       )::text END AS wire,
       CASE WHEN m.kind = 'raw' THEN m.data #>> '{}' END AS raw
FROM unnest(%(channels)s::text[], %(after)s::bigint[]) AS c (channel, after_id)
CROSS JOIN LATERAL (
    SELECT * FROM pgqueue.realtime_messages x
    WHERE x.channel = c.channel AND x.id > c.after_id
    ORDER BY x.id
    LIMIT %(limit)s
) m
ORDER BY m.id

-- name: realtime_channel_head
-- The newest message id of a channel (0 when it has none): where a new subscriber starts.
SELECT coalesce(max(m.id), 0) AS head FROM pgqueue.realtime_messages m WHERE m.channel = %(channel)s

-- name: realtime_run_messages
-- A run's messages still kept, newest first (the dashboard's run page).
SELECT m.id, m.channel, m.topic, m.kind, m.stream_id, m.size_bytes, m.created_at,
       left(CASE WHEN m.kind = 'raw' THEN m.data #>> '{}' ELSE m.data::text END, %(preview)s) AS preview
FROM pgqueue.realtime_messages m
WHERE m.run_id = %(run_id)s
ORDER BY m.id DESC
LIMIT %(limit)s

-- name: realtime_prune
-- Messages older than the retention, oldest first, a batch at a time.
DELETE FROM pgqueue.realtime_messages WHERE id IN (
    SELECT id FROM pgqueue.realtime_messages
    WHERE created_at < clock_timestamp() - make_interval(secs => %(retention_s)s)
    ORDER BY created_at
    LIMIT %(limit)s
)
