-- Event sender role for pgqueue's transactional outbox: EXECUTE on pgqueue.send_event,
-- pgqueue.send_events, pgqueue.send_signal and pgqueue.publish (realtime), nothing else. The
-- functions are SECURITY DEFINER, so the role needs no privilege on any table: it cannot read
-- events, runs or step outputs, and cannot call the internal functions. Grant it to the
-- application's database role so the application can emit events atomically with its own writes.
-- Not a migration (roles are cluster-wide and managed databases often deny CREATEROLE): run it
-- yourself as a role that may create roles, once per database; it is idempotent.
--
--   psql "$DATABASE_URL" -v sender=pgqueue_sender -f sql/grants/sender.sql
--   -- then:  GRANT pgqueue_sender TO my_app;   (or ALTER ROLE pgqueue_sender LOGIN PASSWORD '...')
--
-- `sender` defaults to pgqueue_sender.
\if :{?sender}
\else
\set sender pgqueue_sender
\endif

SELECT format('CREATE ROLE %I NOLOGIN', :'sender')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'sender') \gexec

SELECT format('GRANT USAGE ON SCHEMA pgqueue TO %I', :'sender') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION pgqueue.send_event(text, jsonb, text, timestamptz) TO %I', :'sender') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION pgqueue.send_events(jsonb) TO %I', :'sender') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION pgqueue.send_signal(text, jsonb) TO %I', :'sender') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION pgqueue.publish(text, text, jsonb, text) TO %I', :'sender') \gexec
