-- The transactional outbox: an application that keeps its data in this PostgreSQL sends events
-- from inside its own transaction. If the transaction rolls back, the event never existed; if it
-- commits, the event is durable, the runner is woken (NOTIFY is delivered at commit) and runs
-- start. No extra table and no relay: the event goes through pgqueue.event_ingest_v1, exactly as
-- POST /e/{key} stores it, with the same validation and the same 24-hour dedupe by `id`.
--
-- Stable API (documented in docs/sql.md; never changed incompatibly):
--   pgqueue.send_event(name text, data jsonb DEFAULT '{}', id text DEFAULT NULL,
--                      ts timestamptz DEFAULT NULL) RETURNS text           -- the event id
--   pgqueue.send_events(events jsonb) RETURNS SETOF text                   -- [{name, data, id, ts, user, v}]
-- Both are SECURITY DEFINER: a role granted EXECUTE on them (sql/grants/sender.sql) can send
-- events without any privilege on pgqueue's tables.
--
-- Limits, as for the Event API: names up to 512 characters, not starting with `inngest/`;
-- `data` and `user` JSON objects; each event at most `max_event_bytes` bytes as jsonb text (a row
-- of pgqueue.limits, default 524288 = PGQUEUE_MAX_EVENT_BYTES's default: pgqueue's to set, never
-- the caller's, which a session setting was), nested at most 128 levels, no number beyond a
-- double's range; at most 5,000 events per send_events call. Errors are SQLSTATE 22023
-- (invalid_parameter_value) or 54000 (program_limit_exceeded) with a message naming the event.

-- pgqueue.outbox_event_v2: one validated event as event_ingest_v1 takes it (internal). Version 1
-- read its limit from the session setting pgqueue.max_event_bytes (dropped by migration 0016).
CREATE OR REPLACE FUNCTION pgqueue.outbox_event_v2(
    p_where text, p_name text, p_data jsonb, p_id text, p_ts_ms bigint, p_user jsonb, p_v text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event   jsonb;
    v_size    integer;
    v_max     bigint := coalesce((SELECT l.value FROM pgqueue.limits l WHERE l.name = 'max_event_bytes'), 524288);
    v_now_ms  bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_id      text;
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' THEN
        RAISE EXCEPTION '%: `name` is required and must be a non-empty string', p_where USING ERRCODE = '22023';
    END IF;
    IF length(p_name) > 512 THEN
        RAISE EXCEPTION '%: `name` is longer than 512 characters', p_where USING ERRCODE = '22023';
    END IF;
    IF starts_with(p_name, 'inngest/') THEN
        RAISE EXCEPTION '%: event names starting with ''inngest/'' are reserved for internal events', p_where
            USING ERRCODE = '22023';
    END IF;
    IF p_data IS NOT NULL AND jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION '%: `data` must be a JSON object', p_where USING ERRCODE = '22023';
    END IF;
    IF p_user IS NOT NULL AND jsonb_typeof(p_user) <> 'object' THEN
        RAISE EXCEPTION '%: `user` must be a JSON object', p_where USING ERRCODE = '22023';
    END IF;
    IF p_id IS NOT NULL AND length(p_id) > 1024 THEN
        RAISE EXCEPTION '%: `id` is longer than 1024 characters', p_where USING ERRCODE = '22023';
    END IF;
    IF p_ts_ms IS NOT NULL AND (p_ts_ms < 0 OR p_ts_ms > 9007199254740992) THEN
        RAISE EXCEPTION '%: `ts` must be a non-negative timestamp in milliseconds', p_where USING ERRCODE = '22023';
    END IF;
    -- The event itself is level 1 and `data` level 2, as pgqueue/events/ingest.py counts: a container at
    -- path level 127 or deeper inside data or user is nested deeper than 128 levels.
    IF jsonb_path_exists(jsonb_build_array(coalesce(p_data, '{}'), coalesce(p_user, '{}')),
                         'strict $[*].**{127 to last} ? (@.type() == "object" || @.type() == "array")') THEN
        RAISE EXCEPTION '% is nested deeper than 128 levels', p_where USING ERRCODE = '22023';
    END IF;
    IF jsonb_path_exists(jsonb_build_array(coalesce(p_data, '{}'), coalesce(p_user, '{}')),
                         'strict $.** ? (@.type() == "number" && @.abs() > 1.7976931348623157e308)') THEN
        RAISE EXCEPTION '% contains a number too large for a double-precision float', p_where
            USING ERRCODE = '22023';
    END IF;
    v_event := jsonb_build_object('name', p_name, 'data', coalesce(p_data, '{}'), 'user', p_user,
                                  'ts', coalesce(nullif(p_ts_ms, 0), v_now_ms), 'v', p_v, 'external_id',
                                  nullif(p_id, ''));
    v_size := octet_length(v_event::text);
    IF v_size > v_max THEN
        RAISE EXCEPTION '% is % bytes; the limit is % bytes', p_where, v_size, v_max
            USING ERRCODE = '54000',
                  HINT = 'pgqueue''s role raises it in pgqueue.limits (and PGQUEUE_MAX_EVENT_BYTES for POST /e)';
    END IF;
    v_id := pgqueue.ulid_encode_v1(v_now_ms, pgqueue.ulid_entropy_v1());
    RETURN v_event || jsonb_build_object(
        'id', v_id,
        'dedupe_key', CASE WHEN nullif(p_id, '') IS NULL THEN NULL
                           WHEN length(p_id) <= 200 THEN p_id
                           ELSE 'sha256:' || encode(sha256(convert_to(p_id, 'UTF8')), 'hex') END);
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.send_event(
    name text, data jsonb DEFAULT '{}', id text DEFAULT NULL, ts timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event jsonb;
BEGIN
    v_event := pgqueue.outbox_event_v2(
        'the event', send_event.name, send_event.data, send_event.id,
        CASE WHEN send_event.ts IS NULL THEN NULL
             ELSE floor(extract(epoch FROM send_event.ts) * 1000)::bigint END,
        NULL, NULL);
    PERFORM pgqueue.event_ingest_v1(jsonb_build_array(v_event));
    RETURN v_event ->> 'id';
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.send_events(events jsonb)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows jsonb := '[]';
    v_item jsonb;
    v_ts   jsonb;
    v_n    integer;
    i      integer := 0;
BEGIN
    IF events IS NULL OR jsonb_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'send_events takes a JSON array of events like [{"name": "...", "data": {}}]'
            USING ERRCODE = '22023';
    END IF;
    v_n := jsonb_array_length(events);
    IF v_n > 5000 THEN
        RAISE EXCEPTION '% events in one call; the limit is 5000', v_n USING ERRCODE = '54000';
    END IF;
    FOR v_item IN SELECT e FROM jsonb_array_elements(events) AS e LOOP
        IF jsonb_typeof(v_item) <> 'object' THEN
            RAISE EXCEPTION 'event %: must be a JSON object', i USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(v_item -> 'name') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'event %: `name` is required and must be a non-empty string', i USING ERRCODE = '22023';
        END IF;
        IF v_item ? 'id' AND jsonb_typeof(v_item -> 'id') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'event %: `id` must be a string', i USING ERRCODE = '22023';
        END IF;
        IF v_item ? 'v' AND jsonb_typeof(v_item -> 'v') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'event %: `v` must be a string', i USING ERRCODE = '22023';
        END IF;
        v_ts := v_item -> 'ts';
        IF v_ts IS NOT NULL AND jsonb_typeof(v_ts) NOT IN ('number', 'null')
           OR jsonb_typeof(v_ts) = 'number' AND (v_ts)::numeric <> trunc((v_ts)::numeric) THEN
            RAISE EXCEPTION 'event %: `ts` must be an integer timestamp in milliseconds', i USING ERRCODE = '22023';
        END IF;
        v_rows := v_rows || jsonb_build_array(pgqueue.outbox_event_v2(
            format('event %s', i), v_item ->> 'name', nullif(v_item -> 'data', 'null'),
            v_item ->> 'id', CASE WHEN jsonb_typeof(v_ts) = 'number' THEN (v_ts)::numeric::bigint END,
            nullif(v_item -> 'user', 'null'), v_item ->> 'v'));
        i := i + 1;
    END LOOP;
    PERFORM pgqueue.event_ingest_v1(v_rows);
    RETURN QUERY SELECT r ->> 'id' FROM jsonb_array_elements(v_rows) AS r;
END
$$;

-- Functions are executable by PUBLIC by default, and SECURITY DEFINER ones act as their owner:
-- only roles granted the sender grant (or the owner) may send.
REVOKE EXECUTE ON FUNCTION pgqueue.send_event(text, jsonb, text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgqueue.send_events(jsonb) FROM PUBLIC;
