-- name: app_upsert
INSERT INTO pgqueue.apps AS a (name, url, sdk_language, sdk_version, framework, app_version, checksum, synced_at)
VALUES (%(name)s, %(url)s, %(sdk_language)s, %(sdk_version)s, %(framework)s, %(app_version)s, %(checksum)s, now())
ON CONFLICT (name) DO UPDATE SET
    url = excluded.url, sdk_language = excluded.sdk_language, sdk_version = excluded.sdk_version,
    framework = excluded.framework, app_version = excluded.app_version, checksum = excluded.checksum,
    sync_error = NULL, synced_at = now(),
    updated_at = CASE WHEN a.checksum IS DISTINCT FROM excluded.checksum THEN now() ELSE a.updated_at END,
    -- Synced from another URL: its functions are called there from now on (two apps sharing an
    -- id move each other's functions back and forth); the sync warns, the dashboard says so.
    previous_url = CASE WHEN a.url IS DISTINCT FROM excluded.url THEN a.url ELSE a.previous_url END,
    url_changed_at = CASE WHEN a.url IS DISTINCT FROM excluded.url THEN now() ELSE a.url_changed_at END
RETURNING id, previous_url, url_changed_at

-- name: app_lock
SELECT pg_advisory_xact_lock(hashtextextended('pgqueue.app:' || %(name)s, 0))

-- name: app_checksum
SELECT id, checksum, url FROM pgqueue.apps WHERE name = %(name)s

-- name: function_upsert
INSERT INTO pgqueue.functions AS f (app_id, slug, name, url, config, retries, finish_timeout_ms)
VALUES (%(app_id)s, %(slug)s, %(name)s, %(url)s, %(config)s::jsonb, %(retries)s, %(finish_timeout_ms)s)
ON CONFLICT (slug) DO UPDATE SET
    app_id = excluded.app_id, name = excluded.name, url = excluded.url, config = excluded.config,
    retries = excluded.retries, finish_timeout_ms = excluded.finish_timeout_ms, archived_at = NULL,
    updated_at = now()
RETURNING id

-- name: function_triggers_clear
DELETE FROM pgqueue.function_triggers WHERE function_id = %(function_id)s

-- name: function_trigger_insert
INSERT INTO pgqueue.function_triggers (function_id, position, event_name, name_prefix, expression, cron)
VALUES (%(function_id)s, %(position)s, %(event_name)s, %(name_prefix)s, %(expression)s, %(cron)s)

-- name: function_archive_missing
UPDATE pgqueue.functions SET archived_at = now(), updated_at = now()
WHERE app_id = %(app_id)s AND archived_at IS NULL AND NOT (slug = ANY(%(slugs)s::text[]))
RETURNING id, slug

-- name: app_list
SELECT a.id, a.name, a.url, a.sdk_language, a.sdk_version, a.framework, a.app_version,
       a.sync_error, a.created_at, a.updated_at, a.synced_at, a.previous_url, a.url_changed_at,
       (SELECT count(*) FROM pgqueue.functions f WHERE f.app_id = a.id AND f.archived_at IS NULL) AS function_count
FROM pgqueue.apps a ORDER BY a.name

-- name: app_get
SELECT id, name, url, sdk_language, sdk_version, framework, app_version, sync_error, created_at, updated_at, synced_at
FROM pgqueue.apps WHERE id::text = %(ref)s OR name = %(ref)s
ORDER BY (id::text = %(ref)s) DESC LIMIT 1

-- name: app_set_sync_error
UPDATE pgqueue.apps SET sync_error = %(error)s, updated_at = now() WHERE url = %(url)s

-- name: function_list_for_app
SELECT f.id, f.slug, f.name, f.url, f.config, f.retries, f.created_at, f.updated_at, f.archived_at, f.paused_at
FROM pgqueue.functions f
WHERE f.app_id = %(app_id)s AND (%(include_archived)s OR f.archived_at IS NULL)
ORDER BY f.slug

-- name: trigger_candidates
-- Active functions whose event trigger can match any of the given names (exact or wildcard prefix).
SELECT f.id AS function_id, f.slug, f.retries, f.paused_at, f.config, t.position, t.event_name, t.name_prefix, t.expression
FROM pgqueue.function_triggers t
JOIN pgqueue.functions f ON f.id = t.function_id
WHERE f.archived_at IS NULL
  AND (t.event_name = ANY(%(names)s::text[])
       OR (t.name_prefix IS NOT NULL AND EXISTS (
             SELECT 1 FROM unnest(%(names)s::text[]) AS n(name) WHERE starts_with(n.name, t.name_prefix))))
ORDER BY f.id, t.position

-- name: function_slug
SELECT slug FROM pgqueue.functions WHERE id = %(id)s

-- name: function_by_slug
SELECT f.id, f.slug, f.app_id, f.retries, f.config, f.paused_at, f.archived_at
FROM pgqueue.functions f WHERE f.slug = %(slug)s
