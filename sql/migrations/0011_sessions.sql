-- 0011_sessions: server-side dashboard sessions and login throttling (issue 13, items 4 and 5).
--
-- Why: a session was a signed cookie whose key derived from the signing key alone, so logout only
-- cleared the cookie (a copy kept working for 12 h) and changing the admin password or removing the
-- API token that opened a session left it valid. And the login counted nothing, so a password could
-- be guessed as fast as the server answered. Both states must be shared by every server process and
-- every Lambda container, so they live here; api/sessions.py and api/throttle.py say how they are used.

-- One row per signed-in browser. The cookie carries a random token; only its SHA-256 is stored, so a
-- reader of this table cannot present a session. `credential_mac` is an HMAC (keyed from the signing
-- key) of the credential that opened the session: a request is refused once the running
-- configuration no longer accepts that credential. Rows are deleted on logout, by "sign out
-- everywhere", when found refused, and in small batches once expired (at each login).
CREATE TABLE pgqueue.sessions (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    credential text NOT NULL CHECK (credential IN ('password', 'api_token', 'signing_key')),
    credential_mac bytea NOT NULL CHECK (octet_length(credential_mac) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    created_from text NOT NULL CHECK (char_length(created_from) <= 64),
    CHECK (expires_at > created_at)
);
CREATE INDEX sessions_expires ON pgqueue.sessions (expires_at);

-- Failed dashboard logins per throttling key: 'address:<client address or IPv6 /64>' and
-- 'account:dashboard' (every failure, from anywhere). pgqueue.login_admit_v1 counts an attempt
-- before its password is checked and refuses attempts while a key's wait runs; rows are forgotten
-- (deleted in small batches) once their last failure is old enough.
CREATE TABLE pgqueue.login_failures (
    key text PRIMARY KEY CHECK (char_length(key) <= 100),
    failures integer NOT NULL CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL
);
CREATE INDEX login_failures_last_failure ON pgqueue.login_failures (last_failure_at);
