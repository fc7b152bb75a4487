-- Signals: resume the run waiting in step.waitForSignal (JS SDK) for a signal name. One
-- implementation for every sender: POST /v1/signals (the SDKs' `sendSignal`, REST clients) and
-- SQL (`SELECT pgqueue.send_signal('order-42-approved', '{"by": "ann"}')`, from the application's
-- own transaction: the run resumes only if that transaction commits).
--
-- Stable API (documented in docs/sql.md; never changed incompatibly):
--   pgqueue.send_signal(signal text, data jsonb DEFAULT NULL) RETURNS text
--     the id of the run that was waiting, or NULL when no run waits for this signal (the signal
--     is then dropped, as Inngest drops it: POST /v1/signals answers 404).
--   The signal's data is at most `max_event_bytes` of pgqueue.limits (pgqueue's own, as for events).
-- SECURITY DEFINER like pgqueue.send_event: sql/grants/sender.sql grants it with the outbox.
--
-- What a resume does is what pgqueue/runner/matching.py does for an event that resumes a wait:
-- lock the run, consume the pause (exactly one consumer wins), memoise the step, drop its pending
-- timeout, queue the run's next discovery call once nothing else of it is pending (at once for a
-- race-mode step) and then wake the workers. A paused function's run records the step; its call
-- is held like any work of a paused function (the claim skips it, the rescuer parks it). The step's memo is the shape the JS SDK returns from
-- waitForSignal: {"data": {"signal": <name>, "data": <data>}}.
--
-- Errors are SQLSTATE 22023 (invalid_parameter_value) or 54000 (program_limit_exceeded).

-- pgqueue.signal_send_v2: version 1 read its limit from the session setting pgqueue.max_event_bytes,
-- which the caller could SET; this one reads pgqueue.limits.
CREATE OR REPLACE FUNCTION pgqueue.signal_send_v2(p_signal text, p_data jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    v_max    bigint := coalesce((SELECT l.value FROM pgqueue.limits l WHERE l.name = 'max_event_bytes'), 524288);
    v_memo   jsonb;
    v_size   integer;
    v_pause  record;
    v_status text;
BEGIN
    IF p_signal IS NULL OR btrim(p_signal) = '' THEN
        RAISE EXCEPTION '`signal` is required and must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF length(p_signal) > 512 THEN
        RAISE EXCEPTION 'the signal name is longer than 512 characters' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NOT NULL AND jsonb_path_exists(jsonb_build_array(p_data),
            'strict $[*].**{127 to last} ? (@.type() == "object" || @.type() == "array")') THEN
        RAISE EXCEPTION 'the signal''s data is nested deeper than 128 levels' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NOT NULL AND jsonb_path_exists(jsonb_build_array(p_data),
            'strict $.** ? (@.type() == "number" && @.abs() > 1.7976931348623157e308)') THEN
        RAISE EXCEPTION 'the signal''s data contains a number too large for a double-precision float'
            USING ERRCODE = '22023';
    END IF;
    v_memo := jsonb_build_object('data', jsonb_build_object('signal', p_signal, 'data', p_data));
    v_size := octet_length(v_memo::text);
    IF v_size > v_max THEN
        RAISE EXCEPTION 'the signal is % bytes; the limit is % bytes', v_size, v_max
            USING ERRCODE = '54000',
                  HINT = 'pgqueue''s role raises it in pgqueue.limits (and PGQUEUE_MAX_EVENT_BYTES for POST /e)';
    END IF;

    -- Read the holder, then lock in the order used everywhere (the run, then its pause). The pause
    -- may go in between (another sender, its timeout, a run taking the signal over with "replace",
    -- the run ending): then look again.
    FOR i IN 1..5 LOOP
        SELECT p.id, p.run_id, p.step_id, p.step_name, p.race INTO v_pause
        FROM pgqueue.pauses p
        WHERE p.signal = p_signal AND p.expires_at > now();
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        SELECT r.status INTO v_status FROM pgqueue.runs r WHERE r.id = v_pause.run_id FOR UPDATE;
        DELETE FROM pgqueue.pauses p WHERE p.id = v_pause.id AND p.signal = p_signal;
        CONTINUE WHEN NOT FOUND OR v_status NOT IN ('queued', 'running');

        INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)
        VALUES (v_pause.run_id, v_pause.step_id, v_pause.step_name, 'WaitForSignal', v_memo, 0)
        ON CONFLICT (run_id, step_id) DO NOTHING;
        -- The timeout that would have resumed the step with null.
        DELETE FROM pgqueue.queue_items q
        WHERE q.run_id = v_pause.run_id AND q.step_id = v_pause.step_id AND q.state = 'available';
        -- The next discovery call, as pgqueue/runs/transitions.py continue_run queues it.
        IF v_pause.race OR (
               NOT EXISTS (SELECT 1 FROM pgqueue.queue_items q
                           WHERE q.run_id = v_pause.run_id AND NOT (q.kind = 'timeout' AND starts_with(q.step_id, '$')))
               AND NOT EXISTS (SELECT 1 FROM pgqueue.pauses p
                               WHERE p.run_id = v_pause.run_id AND p.step_id IS NOT NULL)) THEN
            INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, ckeys, climits, priority_s)
            SELECT r.id, r.function_id, 'call', 'step', r.max_attempts, r.ckeys, r.climits, r.priority_s
            FROM pgqueue.runs r WHERE r.id = v_pause.run_id
            ON CONFLICT (run_id, step_id) DO NOTHING;
            -- Workers are woken only for new work (a NOTIFY takes a cluster-wide lock at commit).
            IF FOUND THEN
                PERFORM pg_notify('pgqueue_queue', '');
            END IF;
        END IF;
        RETURN v_pause.run_id;
    END LOOP;
    RETURN NULL;
END
$$;

-- Version 1 stays for the API processes of the previous release during a deploy (POST /v1/signals
-- calls it by name); it now takes version 2's limit.
CREATE OR REPLACE FUNCTION pgqueue.signal_send_v1(p_signal text, p_data jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pgqueue.signal_send_v2(p_signal, p_data);
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.send_signal(signal text, data jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pgqueue.signal_send_v2(send_signal.signal, send_signal.data);
END
$$;

-- As for pgqueue.send_event: only roles granted the sender grant (or the owner) may send.
REVOKE EXECUTE ON FUNCTION pgqueue.send_signal(text, jsonb) FROM PUBLIC;
