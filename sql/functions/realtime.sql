-- Realtime: publish a message to a channel's topics; every API process fans it out to its own
-- subscribers (pgqueue/realtime/hub.py). One implementation for every publisher:
-- POST /v1/realtime/publish (step.realtime.publish, inngest.realtime.publish, the Python SDK's
-- inngest.experimental.realtime.publish), its streamed form (Content-Type: text/stream), a durable
-- endpoint's stream (POST /v1/realtime/publish/tee) and SQL from the application's own transaction:
--
-- Stable API (documented in docs/sql.md; never changed incompatibly):
--   pgqueue.publish(channel text, topic text, data jsonb, run_id text DEFAULT NULL) RETURNS bigint
--     the message's id. Delivered when the caller's transaction commits (NOTIFY is sent at
--     commit), never if it rolls back. At most pgqueue.realtime_max_message_bytes bytes of data
--     (a setting, default 524288 = PGQUEUE_REALTIME_MAX_MESSAGE_BYTES's default).
--   SECURITY DEFINER like pgqueue.send_event: sql/grants/sender.sql grants it with the outbox.
--
-- Order: a publish takes a transaction-scoped advisory lock on its channel before it draws ids, so
-- within a channel ids follow commit order (and NOTIFYs arrive in commit order). A long
-- transaction that publishes holds up other publishers of the same channel until it ends.
--
-- Errors are SQLSTATE 22023 (invalid_parameter_value) or 54000 (program_limit_exceeded).

-- pgqueue.realtime_publish_v1: store `p_datas` (one message per element, per topic) and NOTIFY
-- their ids on channel pgqueue_realtime. Returns each stored (or recognised) message.
--
-- p_dedupe: the publish came from a function run (p_run_id) and is recognised when the step that
-- made it is retried. If exactly one call of that run holds a lease, the publish is keyed by the
-- point the run had reached (the number of steps it had stored: a step and its retries run at the
-- same point, whether the SDK ran it inside a discovery call or in a call of its own) and by the
-- channel, topic and data, counted within the call (the n-th identical publish of a call is the
-- n-th of an earlier call). A message with that key made by an earlier call of the same step, or
-- by a discovery call (which ran the step inline), is the one this publish repeats: it is not
-- stored again (duplicate = true) and is handed to this call, so a further retry is recognised
-- too. One made by another step at the same point (parallel steps) is not. Without a lease to go
-- by (no run, a run with parallel calls in flight), every publish is stored.
CREATE OR REPLACE FUNCTION pgqueue.realtime_publish_v1(
    p_channel text, p_topics text[], p_kind text, p_datas jsonb[], p_run_id text, p_stream_id text,
    p_max_bytes integer, p_dedupe boolean)
RETURNS TABLE (message_id bigint, topic text, duplicate boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_topic   text;
    v_data    jsonb;
    v_size    integer;
    v_leases  integer := 0;
    v_step    text;
    v_lease   uuid;
    v_where   text;
    v_base    text;
    v_key     text;
    v_n       integer;
    v_dup     boolean;
    v_old     record;
    v_id      bigint;
    v_ids     text := '';
BEGIN
    IF p_channel IS NULL OR p_channel = '' THEN
        RAISE EXCEPTION '`channel` is required and must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_channel) > 1024 THEN
        RAISE EXCEPTION 'the channel is longer than 1024 bytes' USING ERRCODE = '22023';
    END IF;
    IF p_topics IS NULL OR cardinality(p_topics) = 0 THEN
        RAISE EXCEPTION 'at least one `topic` is required' USING ERRCODE = '22023';
    END IF;
    FOREACH v_topic IN ARRAY p_topics LOOP
        IF v_topic IS NULL OR v_topic = '' OR octet_length(v_topic) > 1024 THEN
            RAISE EXCEPTION 'every topic must be a non-empty string of at most 1024 bytes' USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF p_kind IS NULL OR p_kind NOT IN ('data', 'datastream-start', 'chunk', 'datastream-end', 'raw') THEN
        RAISE EXCEPTION 'unknown message kind %', coalesce(p_kind, 'NULL') USING ERRCODE = '22023';
    END IF;
    FOREACH v_data IN ARRAY coalesce(p_datas, '{}') LOOP
        v_size := octet_length(coalesce(v_data, 'null')::text);
        IF v_size > p_max_bytes THEN
            RAISE EXCEPTION 'the message is % bytes; the limit is % bytes', v_size, p_max_bytes
                USING ERRCODE = '54000',
                      HINT = 'raise it with SET pgqueue.realtime_max_message_bytes (and PGQUEUE_REALTIME_MAX_MESSAGE_BYTES)';
        END IF;
    END LOOP;

    PERFORM pg_advisory_xact_lock(hashtextextended('pgqueue.realtime:' || p_channel, 0));

    IF p_dedupe AND p_run_id IS NOT NULL THEN
        -- state::text: a lookup by run never matches the partial lease indexes (docs/sql.md)
        SELECT count(*), min(q.step_id), min(q.lease_token::text)::uuid INTO v_leases, v_step, v_lease
        FROM pgqueue.queue_items q
        WHERE q.run_id = p_run_id AND q.state::text = 'leased';
        IF v_leases = 1 THEN
            SELECT 'at:' || count(*) INTO v_where FROM pgqueue.steps s WHERE s.run_id = p_run_id;
        END IF;
    END IF;

    FOREACH v_topic IN ARRAY p_topics LOOP
        FOREACH v_data IN ARRAY coalesce(p_datas, '{}') LOOP
            v_key := NULL;
            IF v_where IS NOT NULL THEN
                v_base := encode(sha256(convert_to(concat_ws(chr(31), p_run_id, v_where, p_channel, v_topic,
                                                             p_kind, coalesce(v_data, 'null')::text), 'UTF8')), 'hex');
                v_n := 0;
                v_dup := false;
                LOOP
                    v_key := v_base || ':' || v_n;
                    SELECT m.id, m.dedupe_lease, m.dedupe_step INTO v_old
                    FROM pgqueue.realtime_messages m WHERE m.dedupe_key = v_key;
                    EXIT WHEN NOT FOUND;
                    IF v_old.dedupe_lease IS DISTINCT FROM v_lease
                       AND (v_old.dedupe_step = v_step OR v_old.dedupe_step = 'step') THEN
                        v_dup := true;  -- an earlier call of the same step made it: this one repeats it
                        EXIT;
                    END IF;
                    -- made by this call (this publish is its next one), or by another step: look further
                    v_n := v_n + 1;
                END LOOP;
                IF v_dup THEN
                    UPDATE pgqueue.realtime_messages SET dedupe_lease = v_lease WHERE id = v_old.id;
                    message_id := v_old.id;
                    topic := v_topic;
                    duplicate := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            END IF;
            INSERT INTO pgqueue.realtime_messages
                (channel, topic, kind, data, stream_id, run_id, size_bytes, dedupe_key, dedupe_lease, dedupe_step)
            VALUES (p_channel, v_topic, p_kind, coalesce(v_data, 'null'), p_stream_id, p_run_id,
                    octet_length(coalesce(v_data, 'null')::text), v_key,
                    CASE WHEN v_key IS NOT NULL THEN v_lease END, CASE WHEN v_key IS NOT NULL THEN v_step END)
            RETURNING id INTO v_id;
            -- ids only, comma-separated, each NOTIFY well under the 8,000-byte payload limit
            IF octet_length(v_ids) > 7000 THEN
                PERFORM pg_notify('pgqueue_realtime', v_ids);
                v_ids := '';
            END IF;
            v_ids := CASE WHEN v_ids = '' THEN v_id::text ELSE v_ids || ',' || v_id END;
            message_id := v_id;
            topic := v_topic;
            duplicate := false;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    IF v_ids <> '' THEN
        PERFORM pg_notify('pgqueue_realtime', v_ids);
    END IF;
END
$$;

-- pgqueue.realtime_publish_many_v1: several publishes in one transaction (the API's group commit:
-- the publishes that arrive while one commits go in the next, so one WAL flush serves them all).
-- p_items: [{"channel", "topics": [...], "data", "run_id"?}, ...]; each is published as
-- realtime_publish_v1 publishes it (kind data, recognised as a retried step's when it names a run),
-- in the order of their channels' lock keys (every batch takes the channel locks in that order, so
-- two batches never wait for each other in a cycle) and in their own order within a channel.
-- Returns the rows of realtime_publish_v1 with the item's index in p_items.
CREATE OR REPLACE FUNCTION pgqueue.realtime_publish_many_v1(p_items jsonb, p_max_bytes integer)
RETURNS TABLE (item integer, message_id bigint, topic text, duplicate boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_item record;
BEGIN
    IF p_items IS NULL OR jsonb_typeof(p_items) <> 'array' THEN
        RAISE EXCEPTION 'p_items must be a JSON array of publishes' USING ERRCODE = '22023';
    END IF;
    FOR v_item IN
        SELECT (e.ordinality - 1)::integer AS ix, e.value AS it
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e
        ORDER BY hashtextextended('pgqueue.realtime:' || (e.value ->> 'channel'), 0), e.ordinality
    LOOP
        RETURN QUERY
        SELECT v_item.ix, p.message_id, p.topic, p.duplicate
        FROM pgqueue.realtime_publish_v1(
            v_item.it ->> 'channel', ARRAY(SELECT jsonb_array_elements_text(v_item.it -> 'topics')), 'data',
            ARRAY[coalesce(v_item.it -> 'data', 'null')], v_item.it ->> 'run_id', NULL, p_max_bytes,
            v_item.it ->> 'run_id' IS NOT NULL) p;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.publish(channel text, topic text, data jsonb, run_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_max integer := coalesce(nullif(current_setting('pgqueue.realtime_max_message_bytes', true), '')::integer, 524288);
    v_id  bigint;
BEGIN
    SELECT p.message_id INTO v_id
    FROM pgqueue.realtime_publish_v1(publish.channel, ARRAY[publish.topic], 'data', ARRAY[publish.data],
                                     publish.run_id, NULL, v_max, false) p;
    RETURN v_id;
END
$$;

-- Functions are executable by PUBLIC by default, and SECURITY DEFINER ones act as their owner:
-- only roles granted the sender grant (or the owner) may publish.
REVOKE EXECUTE ON FUNCTION pgqueue.publish(text, text, jsonb, text) FROM PUBLIC;
