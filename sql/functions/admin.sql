-- Operator functions callable from plain SQL (psql, a BI tool, a cron job): headline metrics, and
-- cancel / retry of one run. The admin functions refuse runs with a leased queue item — a worker
-- is calling the app for it right now — and say so, like Graphile Worker's admin functions; retry
-- after the call ends (leases last seconds). The REST API and the dashboard use the Python path
-- (pgqueue/admin/actions.py); these mirror it so both leave the same rows behind.
-- Documented with examples in docs/sql.md.

-- pgqueue.ulid_encode_v1: the 26-character ULID text (Crockford base32) of a millisecond timestamp
-- and an 80-bit entropy value, exactly as pgqueue/ids.py encode_ulid writes it.
CREATE OR REPLACE FUNCTION pgqueue.ulid_encode_v1(p_ms bigint, p_entropy numeric)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    value numeric := p_ms::numeric * 2::numeric ^ 80 + p_entropy;
    out text := '';
BEGIN
    IF p_ms < 0 OR p_ms >= 2::bigint ^ 48 OR p_entropy < 0 OR p_entropy >= 2::numeric ^ 80 THEN
        RAISE EXCEPTION 'ULID time or entropy out of range (% ms, entropy %)', p_ms, p_entropy;
    END IF;
    FOR i IN 1..26 LOOP
        out := substr(alphabet, (mod(value, 32))::integer + 1, 1) || out;
        value := div(value, 32);
    END LOOP;
    RETURN out;
END
$$;

-- pgqueue.ulid_entropy_v1: 80 random bits (from gen_random_uuid, core since PostgreSQL 13, so no
-- pgcrypto), with the top bit clear so a caller can add small increments to keep ids ordered.
CREATE OR REPLACE FUNCTION pgqueue.ulid_entropy_v1()
RETURNS numeric
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b bytea := uuid_send(gen_random_uuid());
    e numeric := 0;
BEGIN
    -- bytes 0-5 and 10-15 of a v4 UUID are random (6 and 8 carry the version and variant bits)
    e := get_byte(b, 0) & 127;
    FOR i IN 1..5 LOOP
        e := e * 256 + get_byte(b, i);
    END LOOP;
    FOR i IN 10..13 LOOP
        e := e * 256 + get_byte(b, i);
    END LOOP;
    RETURN e;
END
$$;

-- pgqueue.internal_event_emit_v1: store an internal event (inngest/function.finished, ...) and
-- queue it for the runner, as pgqueue/store/events.py insert_internal does. Returns its id.
CREATE OR REPLACE FUNCTION pgqueue.internal_event_emit_v1(p_id text, p_name text, p_data jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    ms bigint := 0;
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
BEGIN
    FOR i IN 1..10 LOOP  -- the ULID's time part: its first 10 characters
        ms := ms * 32 + strpos(alphabet, substr(p_id, i, 1)) - 1;
    END LOOP;
    INSERT INTO pgqueue.events (id, name, data, ts) VALUES (p_id, p_name, p_data, ms)
    ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO pgqueue.event_inbox (event_id) VALUES (p_id);
        PERFORM pg_notify('pgqueue_events', '');
    END IF;
    RETURN p_id;
END
$$;

-- pgqueue.cancel_run: cancel one live run, exactly as pgqueue/runs/transitions.py cancel does: status
-- cancelled with error {name: Cancelled, message: reason}, its queue items, pauses and singleton
-- slot removed, and inngest/function.cancelled + inngest/function.finished emitted (unless the run
-- was itself triggered by such an event). Refuses unknown runs, ended runs and runs with a leased
-- item. Lock order as everywhere: the run, then its items.
CREATE OR REPLACE FUNCTION pgqueue.cancel_run(p_run_id text, p_reason text DEFAULT 'cancelled from SQL')
RETURNS TABLE (run_id text, status text, cancelled_event_id text, finished_event_id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
#variable_conflict use_column
DECLARE
    r record;
    lease record;
    trigger_event jsonb;
    all_events jsonb;
    slug text;
    payload jsonb;
    v_error jsonb := jsonb_build_object('name', 'Cancelled', 'message', coalesce(p_reason, 'cancelled from SQL'));
    ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    entropy numeric := pgqueue.ulid_entropy_v1();
    cancelled_id text;
    finished_id text;
BEGIN
    SELECT * INTO r FROM pgqueue.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status NOT IN ('queued', 'running') THEN
        RAISE EXCEPTION 'run % already ended with status %', p_run_id, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Locking the items makes a concurrent claim skip them (claim_v1 uses SKIP LOCKED).
    PERFORM 1 FROM pgqueue.queue_items q WHERE q.run_id = p_run_id FOR UPDATE;
    -- the run's own items (`state::text`: never a walk of every lease, see queue_lock_if_leased)
    SELECT q.id, q.leased_by, q.lease_expires_at INTO lease
    FROM pgqueue.queue_items q WHERE q.run_id = p_run_id AND q.state::text = 'leased' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % has a leased queue item (% by %, lease until %): a call is in flight',
            p_run_id, lease.id, lease.leased_by, lease.lease_expires_at
            USING ERRCODE = 'lock_not_available',
                  HINT = 'retry when the call has ended, or cancel through the API, which drops the call''s result';
    END IF;

    UPDATE pgqueue.runs
    SET status = 'cancelled', ended_at = now(), started_at = coalesce(started_at, now()), error = v_error
    WHERE id = p_run_id;
    PERFORM pgqueue.runs_ended_v1(ARRAY[p_run_id], ARRAY[r.function_id], ARRAY['cancelled'], ARRAY[r.created_at],
                                  ARRAY[now()]);
    DELETE FROM pgqueue.queue_items q WHERE q.run_id = p_run_id;
    DELETE FROM pgqueue.pauses p WHERE p.run_id = p_run_id;
    DELETE FROM pgqueue.singletons s WHERE s.run_id = p_run_id;

    -- The finish events, shaped as pgqueue/runs/transitions.py emit_finished shapes them.
    SELECT coalesce(jsonb_agg(
               jsonb_build_object('id', coalesce(e.external_id, e.id), 'name', e.name, 'data', e.data,
                                  'user', coalesce(e."user", '{}'::jsonb), 'ts', e.ts)
               || CASE WHEN e.v IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('v', e.v) END
               || CASE WHEN e.sessions IS NULL THEN '{}'::jsonb
                       ELSE jsonb_build_object('meta', jsonb_build_object('sessions', e.sessions)) END
               ORDER BY array_position(r.event_ids, e.id)), '[]'::jsonb)
    INTO all_events
    FROM pgqueue.events e WHERE e.id = ANY (r.event_ids);
    trigger_event := all_events -> 0;
    IF (trigger_event IS NULL OR trigger_event ->> 'name' NOT IN
            ('inngest/function.finished', 'inngest/function.failed', 'inngest/function.cancelled'))
       AND pgqueue.finish_heard_v1(r.correlation_id) THEN
        SELECT f.slug INTO slug FROM pgqueue.functions f WHERE f.id = r.function_id;
        payload := jsonb_build_object(
            'function_id', coalesce(slug, r.function_id::text),
            'run_id', r.id,
            'event', trigger_event,
            'events', all_events,
            '_inngest', jsonb_build_object('status', 'Cancelled'),
            'error', v_error);
        IF r.correlation_id IS NOT NULL THEN
            payload := payload || jsonb_build_object('correlation_id', r.correlation_id);
        END IF;
        -- Two ULIDs in one millisecond: the second is the first plus one, so they stay ordered.
        cancelled_id := pgqueue.internal_event_emit_v1(
            pgqueue.ulid_encode_v1(ms, entropy), 'inngest/function.cancelled', payload);
        finished_id := pgqueue.internal_event_emit_v1(
            pgqueue.ulid_encode_v1(ms, entropy + 1), 'inngest/function.finished', payload);
    END IF;
    RETURN QUERY SELECT p_run_id, 'cancelled'::text, cancelled_id, finished_id;
END
$$;

-- pgqueue.retry_run: resume a failed run where it failed. The memoised outputs of its successful
-- steps are kept (they are not run again); the failed steps' error memos are removed, the run goes
-- back to `running` with a fresh discovery call queued, so the SDK re-plans from the failure.
-- Refuses unknown runs, runs that did not fail, runs of archived functions and leased items.
-- (To start over from the events instead, use POST /v1/runs/{id}/replay.)
CREATE OR REPLACE FUNCTION pgqueue.retry_run(p_run_id text)
RETURNS TABLE (run_id text, status text, steps_cleared integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
#variable_conflict use_column
DECLARE
    r record;
    archived timestamptz;
    cleared integer := 0;
BEGIN
    SELECT * INTO r FROM pgqueue.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status <> 'failed' THEN
        RAISE EXCEPTION 'run % is %, only failed runs can be retried', p_run_id, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'replay a completed or cancelled run with POST /v1/runs/{id}/replay';
    END IF;
    SELECT f.archived_at INTO archived FROM pgqueue.functions f WHERE f.id = r.function_id;
    IF archived IS NOT NULL THEN
        RAISE EXCEPTION 'run % belongs to a function that is archived (its app no longer serves it)', p_run_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM 1 FROM pgqueue.queue_items q WHERE q.run_id = p_run_id FOR UPDATE;
    IF EXISTS (SELECT 1 FROM pgqueue.queue_items q WHERE q.run_id = p_run_id AND q.state::text = 'leased') THEN
        RAISE EXCEPTION 'run % has a leased queue item: a call is in flight', p_run_id
            USING ERRCODE = 'lock_not_available';
    END IF;

    DELETE FROM pgqueue.steps s
    WHERE s.run_id = p_run_id
      AND CASE WHEN jsonb_typeof(s.memo) = 'object' THEN s.memo ? 'error' AND s.memo - 'error' = '{}'::jsonb
               ELSE false END;
    GET DIAGNOSTICS cleared = ROW_COUNT;

    UPDATE pgqueue.runs
    SET status = 'running', ended_at = NULL, output = NULL, error = NULL
    WHERE id = p_run_id;
    PERFORM pgqueue.runs_reopened_v1(p_run_id, r.function_id, r.created_at);
    -- The call holds the run's concurrency keys and priority, like every call of the run.
    INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, ckeys, climits, priority_s)
    VALUES (p_run_id, r.function_id, 'call', 'step', r.max_attempts, r.ckeys, r.climits, r.priority_s)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('pgqueue_queue', '');
    END IF;
    RETURN QUERY SELECT p_run_id, 'running'::text, cleared;
END
$$;

-- pgqueue.metrics: one row of headline numbers, cheap enough to poll every 15-60 s. Queue figures
-- read the small queue_items table; run counts read live_runs and the per-minute run_counts (0017).
-- /metrics on the server renders this row for Prometheus.
CREATE OR REPLACE FUNCTION pgqueue.metrics()
RETURNS TABLE (
    runs_queued bigint,
    runs_running bigint,
    runs_completed_1h bigint,
    runs_failed_1h bigint,
    runs_cancelled_1h bigint,
    runs_started_5m bigint,
    items_due bigint,
    items_scheduled bigint,
    items_leased bigint,
    leases_expired bigint,
    oldest_due_age_s double precision,
    pauses_waiting bigint,
    events_received_1h bigint,
    events_pending bigint,
    stuck_runs bigint,
    apps bigint,
    functions bigint,
    functions_paused bigint,
    measured_at timestamptz
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER  -- a read-only role (sql/grants/readonly.sql) gets the numbers, not the tables
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    -- Nothing here reads all runs: the live ones are listed in live_runs (each probed for its
    -- status), the ended and started ones counted per minute in run_counts.
    WITH live AS (
        SELECT count(*) FILTER (WHERE r.status = 'queued') AS queued,
               count(*) FILTER (WHERE r.status = 'running') AS running
        FROM pgqueue.live_runs l JOIN pgqueue.runs r ON r.id = l.run_id
        WHERE l.ended_at IS NULL
    ),
    counted AS (
        SELECT coalesce(sum(c.completed) FILTER (WHERE c.minute >= now() - interval '1 hour'), 0)::bigint AS completed,
               coalesce(sum(c.failed) FILTER (WHERE c.minute >= now() - interval '1 hour'), 0)::bigint AS failed,
               coalesce(sum(c.cancelled) FILTER (WHERE c.minute >= now() - interval '1 hour'), 0)::bigint AS cancelled,
               coalesce(sum(c.created) FILTER (WHERE c.minute >= now() - interval '5 minutes'), 0)::bigint AS started
        FROM pgqueue.run_counts c WHERE c.minute >= date_trunc('minute', now() - interval '1 hour')
    ),
    items AS (
        -- work a paused function holds is not due: it waits for the resume, not for a worker
        SELECT count(*) FILTER (WHERE q.state = 'available' AND q.run_at <= now() AND NOT q.held) AS due,
               count(*) FILTER (WHERE q.state = 'available' AND q.run_at > now()) AS scheduled,
               count(*) FILTER (WHERE q.state = 'leased') AS leased,
               count(*) FILTER (WHERE q.state = 'leased' AND q.lease_expires_at < now()) AS expired,
               extract(epoch FROM now() - min(q.run_at) FILTER (
                   WHERE q.state = 'available' AND q.run_at <= now() AND NOT q.held)) AS oldest_due
        FROM (SELECT q0.state, q0.run_at, q0.lease_expires_at,
                     coalesce(q0.blocked AND starts_with(q0.blocked_key, '$paused:'), false) AS held
              FROM pgqueue.queue_items q0) q
    ),
    fns AS (
        SELECT count(*) FILTER (WHERE f.archived_at IS NULL) AS active,
               count(*) FILTER (WHERE f.archived_at IS NULL AND f.paused_at IS NOT NULL) AS paused
        FROM pgqueue.functions f
    )
    SELECT live.queued, live.running, counted.completed, counted.failed, counted.cancelled, counted.started,
           items.due, items.scheduled, items.leased, items.expired,
           coalesce(items.oldest_due::double precision, 0),
           (SELECT count(*) FROM pgqueue.pauses p WHERE p.kind <> 'cancel'),
           -- the events of the last hour, by id (ids are made when events arrive): an index-only range
           (SELECT count(*) FROM pgqueue.events e WHERE e.id >= pgqueue.ulid_bound_v1(now() - interval '1 hour')),
           (SELECT count(*) FROM pgqueue.event_inbox),
           (SELECT count(DISTINCT s.run_id) FROM pgqueue.stuck_runs s),
           (SELECT count(*) FROM pgqueue.apps),
           fns.active, fns.paused,
           now()
    FROM live, counted, items, fns;
END
$$;
