-- Webhooks (a URL /e/{key} whose requests a transform turns into events) and their deliveries.

-- name: ingress_key_lookup
-- What a key in /e/{key} is, by its hash: a webhook, an event key (revoked or not), or nothing.
SELECT 'webhook' AS kind, w.id, w.name, NULL::text[] AS event_names, NULL::timestamptz AS revoked_at,
       w.transform, w.verify, w.secret_enc
FROM pgqueue.webhooks w WHERE w.key_hash = %(key_hash)s
UNION ALL
SELECT 'event_key', k.id, k.name, k.event_names, k.revoked_at, NULL, NULL, NULL
FROM pgqueue.event_keys k WHERE k.key_hash = %(key_hash)s
LIMIT 1

-- name: webhook_create
INSERT INTO pgqueue.webhooks (id, name, key_hash, key_prefix, transform, verify, secret_enc)
VALUES (%(id)s, %(name)s, %(key_hash)s, %(key_prefix)s, %(transform)s, %(verify)s::jsonb, %(secret_enc)s)
RETURNING id, name, key_prefix, transform, verify, (secret_enc IS NOT NULL) AS has_secret, created_at, updated_at

-- name: webhook_update
-- NULL leaves a field as it is; set_verify replaces the verification (and its secret) even by NULL.
UPDATE pgqueue.webhooks SET
    name = coalesce(%(name)s, name),
    transform = coalesce(%(transform)s, transform),
    verify = CASE WHEN %(set_verify)s THEN %(verify)s::jsonb ELSE verify END,
    secret_enc = CASE WHEN %(set_verify)s THEN %(secret_enc)s ELSE secret_enc END,
    key_hash = coalesce(%(key_hash)s, key_hash),
    key_prefix = coalesce(%(key_prefix)s, key_prefix),
    updated_at = now()
WHERE id = %(id)s
RETURNING id, name, key_prefix, transform, verify, (secret_enc IS NOT NULL) AS has_secret, created_at, updated_at

-- name: webhook_get
SELECT w.id, w.name, w.key_prefix, w.transform, w.verify, w.secret_enc, (w.secret_enc IS NOT NULL) AS has_secret,
       w.created_at, w.updated_at
FROM pgqueue.webhooks w WHERE w.id = %(id)s

-- name: webhook_list
SELECT w.id, w.name, w.key_prefix, w.transform, w.verify, (w.secret_enc IS NOT NULL) AS has_secret,
       w.created_at, w.updated_at,
       (SELECT count(*) FROM pgqueue.webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.outcome = 'failed') AS failed_deliveries,
       (SELECT max(d.received_at) FROM pgqueue.webhook_deliveries d WHERE d.webhook_id = w.id) AS last_delivery_at
FROM pgqueue.webhooks w ORDER BY w.name, w.id

-- name: webhook_delete
DELETE FROM pgqueue.webhooks WHERE id = %(id)s RETURNING id

-- name: webhook_delivery_record
-- A delivery that stored no events (failed or refused).
INSERT INTO pgqueue.webhook_deliveries
    (id, webhook_id, outcome, status_code, error, method, content_type, headers, query, body, body_bytes)
VALUES (%(id)s, %(webhook_id)s, %(outcome)s, %(status_code)s, %(error)s, %(method)s, %(content_type)s,
        %(headers)s::jsonb, %(query)s::jsonb, %(body)s, %(body_bytes)s)

-- name: webhook_delivery_accept
-- An accepted delivery and its events in one statement (one round trip, one transaction): the
-- events as POST /e stores them (pgqueue.event_ingest_v1), the delivery with their ids; a
-- re-delivery also marks the failed delivery it re-delivered.
WITH d AS (
    INSERT INTO pgqueue.webhook_deliveries
        (id, webhook_id, outcome, status_code, method, content_type, headers, query, body_bytes, event_ids,
         redelivery_of)
    VALUES (%(id)s, %(webhook_id)s, 'accepted', 200, %(method)s, %(content_type)s, %(headers)s::jsonb,
            %(query)s::jsonb, %(body_bytes)s, %(event_ids)s::text[], %(redelivery_of)s)
    RETURNING 1
), r AS (
    UPDATE pgqueue.webhook_deliveries SET outcome = 'redelivered'
    WHERE id = %(redelivery_of)s AND outcome = 'failed'
    RETURNING 1
)
SELECT pgqueue.event_ingest_v1(%(events)s::jsonb) AS queued,
       (SELECT count(*) FROM d) AS recorded, (SELECT count(*) FROM r) AS redelivered

-- name: webhook_delivery_list
SELECT d.id, d.webhook_id, d.outcome, d.status_code, d.error, d.method, d.content_type, d.body_bytes,
       d.event_ids, d.redelivery_of, d.received_at
FROM pgqueue.webhook_deliveries d
WHERE d.webhook_id = %(webhook_id)s
  AND (%(outcome)s::text IS NULL OR d.outcome = %(outcome)s)
  AND (%(before_id)s::text IS NULL OR d.id < %(before_id)s)
ORDER BY d.id DESC
LIMIT %(limit)s

-- name: webhook_delivery_get
SELECT d.id, d.webhook_id, d.outcome, d.status_code, d.error, d.method, d.content_type, d.headers, d.query,
       d.body, d.body_bytes, d.event_ids, d.redelivery_of, d.received_at
FROM pgqueue.webhook_deliveries d WHERE d.id = %(id)s AND d.webhook_id = %(webhook_id)s

-- name: webhook_delivery_lock
SELECT d.id, d.outcome, d.content_type, d.method, d.headers, d.query, d.body, d.body_bytes
FROM pgqueue.webhook_deliveries d WHERE d.id = %(id)s AND d.webhook_id = %(webhook_id)s
FOR UPDATE

-- name: webhook_delivery_set_error
UPDATE pgqueue.webhook_deliveries SET error = %(error)s, status_code = %(status_code)s WHERE id = %(id)s

-- name: retention_prune_webhook_deliveries
-- Webhook deliveries received before the cutoff (the events they stored have their own retention).
DELETE FROM pgqueue.webhook_deliveries WHERE id IN (
    SELECT id FROM pgqueue.webhook_deliveries WHERE received_at < %(cutoff)s
    ORDER BY received_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id
