-- Run and step metadata (pgqueue.run_metadata, migration 0019; pgqueue/runs/metadata.py validates
-- what comes in, pgqueue/store/run_metadata.py calls these).

-- pgqueue.run_metadata_combine_v1: the values of a metadata row after one update, by the update's
-- op, as Inngest combines metadata of the same kind at the same target: `set` replaces them,
-- `merge` adds and overwrites keys, `delete` removes the keys the update names, `add` adds each
-- number to the one stored under its key (a key holding no number takes the update's value; an
-- update value that is not a number leaves the key as it was).
CREATE OR REPLACE FUNCTION pgqueue.run_metadata_combine_v1(p_old jsonb, p_new jsonb, p_op text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_out jsonb := coalesce(p_old, '{}'::jsonb);
    v_key text;
    v_val jsonb;
BEGIN
    CASE p_op
        WHEN 'set' THEN
            RETURN p_new;
        WHEN 'merge' THEN
            RETURN v_out || p_new;
        WHEN 'delete' THEN
            RETURN v_out - ARRAY(SELECT jsonb_object_keys(p_new));
        WHEN 'add' THEN
            FOR v_key, v_val IN SELECT * FROM jsonb_each(p_new) LOOP
                IF jsonb_typeof(v_out -> v_key) IS DISTINCT FROM 'number' THEN
                    v_out := jsonb_set(v_out, ARRAY[v_key], v_val);
                ELSIF jsonb_typeof(v_val) = 'number' THEN
                    v_out := jsonb_set(v_out, ARRAY[v_key],
                                       to_jsonb((v_out ->> v_key)::numeric + (v_val #>> '{}')::numeric));
                END IF;
            END LOOP;
            RETURN v_out;
        ELSE
            RAISE EXCEPTION 'unknown metadata op %', p_op USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;


-- pgqueue.run_metadata_put_v1: store a run's metadata updates, in their order, each combined with
-- its row (run, scope, step, attempt, span, kind) by its op. p_updates: [{scope, step_id,
-- attempt, span_id, kind, op, values}, ...]. The caller holds the run's row lock (an apply, or
-- the metadata API's transaction), so the total it checks cannot move meanwhile. Raises
-- program_limit_exceeded (54000) when the run's stored metadata would exceed p_max_run_bytes;
-- the caller's transaction (or savepoint) then undoes the updates. Returns the run's total after.
CREATE OR REPLACE FUNCTION pgqueue.run_metadata_put_v1(p_run_id text, p_updates jsonb, p_max_run_bytes integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u record;
    v_values jsonb;
    v_total integer;
BEGIN
    FOR u IN SELECT * FROM jsonb_to_recordset(p_updates)
                 AS x(scope text, step_id text, attempt integer, span_id text, kind text, op text, "values" jsonb)
    LOOP
        SELECT m."values" INTO v_values FROM pgqueue.run_metadata m
        WHERE m.run_id = p_run_id AND m.scope = u.scope AND m.step_id = u.step_id AND m.attempt = u.attempt
          AND m.span_id = u.span_id AND m.kind = u.kind
        FOR UPDATE;
        v_values := pgqueue.run_metadata_combine_v1(v_values, u."values", u.op);
        INSERT INTO pgqueue.run_metadata AS m (run_id, scope, step_id, attempt, span_id, kind, "values", size)
        VALUES (p_run_id, u.scope, u.step_id, u.attempt, u.span_id, u.kind, v_values,
                (SELECT coalesce(sum(octet_length(e.key) + octet_length(e.value::text)), 0)
                 FROM jsonb_each(v_values) AS e))
        ON CONFLICT (run_id, scope, step_id, attempt, span_id, kind) DO UPDATE
            SET "values" = excluded."values", size = excluded.size, updated_at = now();
    END LOOP;
    SELECT coalesce(sum(m.size), 0) INTO v_total FROM pgqueue.run_metadata m WHERE m.run_id = p_run_id;
    IF v_total > p_max_run_bytes THEN
        RAISE EXCEPTION 'the run''s metadata would take % bytes; a run keeps at most % bytes of metadata',
            v_total, p_max_run_bytes
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN v_total;
END
$$;
