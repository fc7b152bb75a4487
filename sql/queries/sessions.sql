-- Dashboard sessions and login throttling (api/sessions.py, api/throttle.py; tables from 0010).

-- name: session_create
-- A new session; the same statement deletes a batch of expired ones, so the table never holds
-- more than the live sessions plus a little.
WITH pruned AS (
    DELETE FROM pgqueue.sessions WHERE token_hash IN (
        SELECT token_hash FROM pgqueue.sessions WHERE expires_at < now()
        ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED)
)
INSERT INTO pgqueue.sessions (token_hash, credential, credential_mac, expires_at, created_from)
VALUES (%(token_hash)s, %(credential)s, %(credential_mac)s, now() + make_interval(secs => %(ttl_s)s),
        %(created_from)s)
RETURNING expires_at

-- name: session_get
-- The one lookup a signed-in request costs: the primary key.
SELECT credential, credential_mac, expires_at FROM pgqueue.sessions
WHERE token_hash = %(token_hash)s AND expires_at > now()

-- name: session_end
DELETE FROM pgqueue.sessions WHERE token_hash = %(token_hash)s

-- name: session_end_all
WITH ended AS (DELETE FROM pgqueue.sessions RETURNING 1)
SELECT count(*)::integer AS ended FROM ended

-- name: login_admit
SELECT key, failures, wait_ms, lock_ms
FROM pgqueue.login_admit_v1(%(keys)s, %(limits)s, %(lockout_ms)s, %(max_lockout_ms)s, %(forget_ms)s, now())

-- name: login_forget
-- A successful login: its address starts afresh; the account gets back the attempt login_admit
-- counted before the password was checked, and at most limit - 1 failures stay (no wait, but the
-- next failure starts one again).
WITH cleared AS (
    DELETE FROM pgqueue.login_failures WHERE key = %(address_key)s
)
UPDATE pgqueue.login_failures
SET failures = greatest(least(failures - 1, %(account_limit)s - 1), 0)
WHERE key = %(account_key)s
