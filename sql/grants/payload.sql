-- Payload reader role for pgqueue: SELECT on the *_payload inspection views (step and run
-- outputs, error messages: pgqueue.run_timeline_payload, pgqueue.recent_failures_payload),
-- nothing else. The read-only role (sql/grants/readonly.sql) reads the same views without those
-- columns; grant this one only to whoever may see what your functions return and raise, which can
-- be customers' data and credentials. Not a migration (roles are cluster-wide and managed
-- databases often deny CREATEROLE): run it yourself as a role that may create roles, once per
-- database; it is idempotent:
--
--   psql "$DATABASE_URL" -v payload_reader=pgqueue_payload_reader -f sql/grants/payload.sql
--   -- then:  GRANT pgqueue_payload_reader TO alice;   (often with pgqueue_reader too)
--
-- Run it again after `pgqueue migrate` adds payload views in a new version: grants are per object.
-- `payload_reader` defaults to pgqueue_payload_reader.
\if :{?payload_reader}
\else
\set payload_reader pgqueue_payload_reader
\endif

SELECT format('CREATE ROLE %I NOLOGIN', :'payload_reader')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'payload_reader') \gexec

SELECT format('GRANT USAGE ON SCHEMA pgqueue TO %I', :'payload_reader') \gexec
-- Views read their tables with their owner's rights: the role needs no grant on any table.
SELECT format('GRANT SELECT ON pgqueue.%I TO %I', c.relname, :'payload_reader')
FROM pg_class c
WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind = 'v' AND c.relname LIKE '%\_payload'
ORDER BY c.relname \gexec
