-- 0009_hashed_keys: every user-supplied key in a btree index has a bounded size.
--
-- Why: idempotency keys, singleton keys and the event `id` de-duplication key were stored exactly
-- as computed or sent. A value past a btree entry's limit (about 2,700 bytes after compression,
-- e.g. an idempotency key of 8,000 random hex characters) made the insert fail with
-- ProgramLimitExceeded; for idempotency and singletons that rolled back the runner's whole batch,
-- which was then retried forever and no later event became a run. They are now stored like the
-- concurrency, throttle, debounce and batch keys already were (pgqueue.ids.compact_key): as given
-- up to 200 characters, else 'sha256:' followed by the hex SHA-256 of the UTF-8 bytes. Rows written
-- before are converted with the same formula, and a CHECK keeps the bound an invariant.

-- A converted key could only collide with a row that already holds the same digest (a sender who
-- used a 'sha256:<digest>' key verbatim); that older row is dropped rather than failing the upgrade.
DELETE FROM pgqueue.idempotency_keys k
WHERE char_length(k.key) > 200
  AND EXISTS (SELECT 1 FROM pgqueue.idempotency_keys o
              WHERE o.function_id = k.function_id
                AND o.key = 'sha256:' || encode(sha256(convert_to(k.key, 'UTF8')), 'hex'));
UPDATE pgqueue.idempotency_keys SET key = 'sha256:' || encode(sha256(convert_to(key, 'UTF8')), 'hex')
WHERE char_length(key) > 200;
ALTER TABLE pgqueue.idempotency_keys ADD CONSTRAINT idempotency_keys_key_compact CHECK (char_length(key) <= 200);

DELETE FROM pgqueue.singletons s
WHERE char_length(s.key) > 200
  AND EXISTS (SELECT 1 FROM pgqueue.singletons o
              WHERE o.function_id = s.function_id
                AND o.key = 'sha256:' || encode(sha256(convert_to(s.key, 'UTF8')), 'hex'));
UPDATE pgqueue.singletons SET key = 'sha256:' || encode(sha256(convert_to(key, 'UTF8')), 'hex')
WHERE char_length(key) > 200;
ALTER TABLE pgqueue.singletons ADD CONSTRAINT singletons_key_compact CHECK (char_length(key) <= 200);

-- event_dedupe.external_id now holds the compacted form; pgqueue.events.external_id keeps the
-- sender's id as sent (it is not indexed). Retention finds an event's open window by event id.
DELETE FROM pgqueue.event_dedupe d
WHERE char_length(d.external_id) > 200
  AND EXISTS (SELECT 1 FROM pgqueue.event_dedupe o
              WHERE o.external_id = 'sha256:' || encode(sha256(convert_to(d.external_id, 'UTF8')), 'hex'));
UPDATE pgqueue.event_dedupe SET external_id = 'sha256:' || encode(sha256(convert_to(external_id, 'UTF8')), 'hex')
WHERE char_length(external_id) > 200;
ALTER TABLE pgqueue.event_dedupe ADD CONSTRAINT event_dedupe_external_id_compact
    CHECK (char_length(external_id) <= 200);
CREATE INDEX event_dedupe_event ON pgqueue.event_dedupe (event_id);
