-- name: event_ingest
SELECT pgqueue.event_ingest_v1(%(events)s::jsonb) AS queued

-- name: event_inbox_claim
-- Claimed rows are deleted in the runner's transaction: on a crash they come back. Returns the
-- claimed events themselves, in receipt order (one round trip for the runner). Each event by its
-- primary key (a LIMIT keeps the lateral from being flattened): a join was planned as a scan of
-- all events whenever the planner thought the table small.
WITH claimed AS (
    DELETE FROM pgqueue.event_inbox
    WHERE seq IN (
        SELECT seq FROM pgqueue.event_inbox ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )
    RETURNING seq, event_id
)
SELECT e.id, e.name, e.data, e."user", e.ts, e.v, e.external_id, e.received_at, e.skip_reason, e.sessions
FROM claimed c
CROSS JOIN LATERAL (SELECT * FROM pgqueue.events e1 WHERE e1.id = c.event_id LIMIT 1) e
ORDER BY c.seq

-- name: event_inbox_take
-- The events a request just stored, handled in its own transaction (pgqueue/runner/inline.py).
WITH taken AS (
    DELETE FROM pgqueue.event_inbox WHERE event_id = ANY(%(ids)s::text[]) RETURNING seq, event_id
)
SELECT event_id FROM taken ORDER BY seq

-- name: event_get_many
SELECT id, name, data, "user", ts, v, external_id, received_at, skip_reason, sessions
FROM pgqueue.events WHERE id = ANY(%(ids)s::text[])

-- name: event_get
SELECT id, name, data, "user", ts, v, external_id, received_at, skip_reason, sessions
FROM pgqueue.events WHERE id = %(id)s

-- name: event_list
SELECT id, name, data, "user", ts, v, external_id, received_at, skip_reason, sessions
FROM pgqueue.events
WHERE (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
  AND (%(received_after)s::timestamptz IS NULL OR received_at >= %(received_after)s)
  AND (%(received_before)s::timestamptz IS NULL OR received_at < %(received_before)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: event_set_skip_reason
UPDATE pgqueue.events SET skip_reason = %(reason)s WHERE id = %(id)s AND skip_reason IS NULL

-- name: event_insert_internal
-- Internal events (inngest/function.finished, ...) enter the same inbox as ingested ones.
WITH e AS (
    INSERT INTO pgqueue.events (id, name, data, ts)
    VALUES (%(id)s, %(name)s, %(data)s::jsonb, %(ts)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), i AS (
    INSERT INTO pgqueue.event_inbox (event_id) SELECT id FROM e RETURNING 1
)
SELECT pg_notify('pgqueue_events', '') FROM i

-- name: event_insert_direct
-- An event that starts one known run (inngest/function.invoked): stored, not queued for triggers.
INSERT INTO pgqueue.events (id, name, data, "user", ts, v, sessions)
VALUES (%(id)s, %(name)s, %(data)s::jsonb, %(user)s::jsonb, %(ts)s, %(v)s, %(sessions)s::jsonb)
RETURNING id, name, data, "user", ts, v, external_id, received_at, skip_reason, sessions

-- name: event_finish_heard
SELECT pgqueue.finish_heard_v1(%(correlation_id)s) AS heard

-- name: event_search_page
-- One page of an event search (pgqueue/runs/search.py): a time window of events by their ids, newest
-- first, optionally of one name (events_name), with the `contains` prefilter of run_search_page.
SELECT id, name, data, "user", ts, v, external_id, received_at, skip_reason, sessions
FROM pgqueue.events
WHERE id >= pgqueue.ulid_bound_v1(greatest(%(after)s::timestamptz - interval '10 minutes', 'epoch'))
  AND id < least(coalesce(%(before_id)s::text, '~'), pgqueue.ulid_bound_v1(%(before)s::timestamptz + interval '10 minutes'))
  AND received_at >= %(after)s AND received_at < %(before)s
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(contains)s::jsonb IS NULL OR data @> %(contains)s::jsonb)
ORDER BY id DESC
LIMIT %(limit)s
