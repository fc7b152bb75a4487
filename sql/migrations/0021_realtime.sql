-- 0021_realtime: realtime messages (Inngest realtime: step.realtime.publish, inngest.realtime.*,
-- durable endpoints that stream; pgqueue/realtime/, sql/functions/realtime.sql).
--
-- Why: a published message must reach the subscribers of every API process, not only of the one
-- that received it. It is stored here and announced with NOTIFY carrying its id only (a NOTIFY
-- payload is limited to 8,000 bytes); each process reads the messages its own subscribers want.
-- Rows live for minutes (PGQUEUE_REALTIME_RETENTION_S, pruned by the rescuer): long enough to
-- fan out, to serve a subscriber that reconnects or joins a durable endpoint's stream late, to
-- recognise a retried step's publish, and to show a run's messages on the dashboard.
--
-- Order: publishes to one channel take a transaction-scoped advisory lock on the channel before
-- they draw their id, so within a channel ids follow commit order. A reader that asks for
-- "id > the last one I saw" per channel never skips a message that commits late.
CREATE TABLE pgqueue.realtime_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel       text NOT NULL CHECK (octet_length(channel) BETWEEN 1 AND 1024),
    topic         text NOT NULL CHECK (octet_length(topic) BETWEEN 1 AND 1024),
    -- data: a JSON message; datastream-start | chunk | datastream-end: a streamed publish
    -- (Content-Type: text/stream); raw: SSE text a durable endpoint tees (topic '$stream')
    kind          text NOT NULL CHECK (kind IN ('data', 'datastream-start', 'chunk', 'datastream-end', 'raw')),
    data          jsonb NOT NULL,
    stream_id     text,
    -- The run that published, as the publisher says (no foreign key: runs and messages have their
    -- own retention, and a publish may name a run this database does not hold).
    run_id        text COLLATE "C",
    size_bytes    integer NOT NULL CHECK (size_bytes >= 0),
    -- A publish from inside a call is recognised when the step is retried (realtime_publish_v1):
    -- its key, and the lease and step ('step': a discovery call) of the call that made it.
    dedupe_key    text,
    dedupe_lease  uuid,
    dedupe_step   text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((dedupe_key IS NULL) = (dedupe_lease IS NULL) AND (dedupe_key IS NULL) = (dedupe_step IS NULL))
);
-- What a process reads: one channel's messages after an id (catch-up), or by id (a NOTIFY).
CREATE INDEX realtime_messages_channel ON pgqueue.realtime_messages (channel, id);
-- The dashboard's run page.
CREATE INDEX realtime_messages_run ON pgqueue.realtime_messages (run_id, id) WHERE run_id IS NOT NULL;
-- The rescuer's pruning, oldest first.
CREATE INDEX realtime_messages_created ON pgqueue.realtime_messages (created_at);
CREATE UNIQUE INDEX realtime_messages_dedupe ON pgqueue.realtime_messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
