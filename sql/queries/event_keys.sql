-- Event keys kept in the database: created, named, limited to event names and revoked without a
-- restart. Only the hex SHA-256 of a key is stored; the key is shown once, when it is created.

-- name: event_key_create
INSERT INTO pgqueue.event_keys (id, name, key_hash, key_prefix, event_names)
VALUES (%(id)s, %(name)s, %(key_hash)s, %(key_prefix)s, %(event_names)s::text[])
RETURNING id, name, key_prefix, event_names, created_at, revoked_at

-- name: event_key_update
UPDATE pgqueue.event_keys SET
    name = coalesce(%(name)s, name),
    event_names = CASE WHEN %(set_event_names)s THEN %(event_names)s::text[] ELSE event_names END
WHERE id = %(id)s
RETURNING id, name, key_prefix, event_names, created_at, revoked_at

-- name: event_key_revoke
UPDATE pgqueue.event_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = %(id)s
RETURNING id, name, key_prefix, event_names, created_at, revoked_at

-- name: event_key_get
SELECT id, name, key_prefix, event_names, created_at, revoked_at FROM pgqueue.event_keys WHERE id = %(id)s

-- name: event_key_list
SELECT id, name, key_prefix, event_names, created_at, revoked_at
FROM pgqueue.event_keys
WHERE %(include_revoked)s OR revoked_at IS NULL
ORDER BY created_at DESC, id DESC
