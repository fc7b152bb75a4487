-- Read-only inspection role for pgqueue: SELECT on the inspection views and EXECUTE on
-- pgqueue.metrics(), nothing else — no base tables, no payload (event data, step and run outputs,
-- error messages: the *_payload views are left out and revoked, see sql/grants/payload.sql for a
-- role that may read them), no admin functions. Not a migration: roles are cluster-wide, and managed databases
-- often deny CREATEROLE, so run it yourself as a role that may create roles, once per database
-- (it is idempotent: running it again changes nothing):
--
--   psql "$DATABASE_URL" -v reader=pgqueue_reader -f sql/grants/readonly.sql
--   -- then give the role a password or grant it to a login role:
--   ALTER ROLE pgqueue_reader LOGIN PASSWORD '...';    -- or: GRANT pgqueue_reader TO grafana;
--
-- Run it again after `pgqueue migrate` adds views in a new version: grants are per object.
-- `reader` defaults to pgqueue_reader.
\if :{?reader}
\else
\set reader pgqueue_reader
\endif

SELECT format('CREATE ROLE %I NOLOGIN', :'reader')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') \gexec

SELECT format('GRANT USAGE ON SCHEMA pgqueue TO %I', :'reader') \gexec
SELECT format('GRANT SELECT ON pgqueue.%I TO %I', c.relname, :'reader')
FROM pg_class c
WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'v' AND c.relname NOT LIKE '%\_payload'
ORDER BY c.relname \gexec
-- Also undoes a grant of this script from before the payload views existed, or made by hand.
SELECT format('REVOKE ALL ON pgqueue.%I FROM %I', c.relname, :'reader')
FROM pg_class c
WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'v' AND c.relname LIKE '%\_payload'
ORDER BY c.relname \gexec
-- Views read their tables with their owner's rights, and pgqueue.metrics() is SECURITY DEFINER:
-- the reader needs no grant on any table. The admin functions (cancel_run, retry_run) run with
-- the caller's rights, so they fail for this role: it cannot write the tables.
SELECT format('GRANT EXECUTE ON FUNCTION pgqueue.metrics() TO %I', :'reader') \gexec
