-- pgqueue.endpoint_run_start_v1: start a run from a durable endpoint (POST /v1/checkpoint,
-- pgqueue/executor/endpoint.py) in one statement: upsert the app (named after the endpoint's
-- origin) and the function (one per route), store the request as the run's event, create the run
-- (running) and its first call item, leased to the app's request itself ('endpoint') until
-- p_lease_until. The request stores its steps under that lease like a checkpointing call does;
-- when it ends the run or hands it over (a failed step, a sleep), the item is applied like a call's
-- answer. If the request dies, the lease expires and the rescuer queues the item: pgqueue then
-- calls the endpoint, which goes on from the stored steps. Returns one row:
--   verdict  'ok' | 'exists' (a run with this id exists: nothing changed)
--   app_id, function_id, item_id, lease_token, max_attempts
CREATE OR REPLACE FUNCTION pgqueue.endpoint_run_start_v1(
    p_app_name text, p_app_url text, p_fn_slug text, p_fn_name text, p_retries integer,
    p_run_id text, p_event_id text, p_event_name text, p_event_data jsonb, p_event_ts bigint,
    p_endpoint_url text, p_endpoint_method text, p_lease_until timestamptz)
RETURNS TABLE (verdict text, app_id uuid, function_id uuid, item_id bigint, lease_token uuid,
               max_attempts integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    v_app   uuid;
    v_fn    uuid;
    v_item  bigint;
    v_token uuid := gen_random_uuid();
BEGIN
    IF EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = p_run_id) THEN
        RETURN QUERY SELECT 'exists', NULL::uuid, NULL::uuid, NULL::bigint, NULL::uuid, NULL::integer;
        RETURN;
    END IF;
    -- The common case (the route ran before) takes no row lock on the app or the function.
    SELECT f.app_id, f.id INTO v_app, v_fn
    FROM pgqueue.functions f
    WHERE f.slug = p_fn_slug AND f.retries = p_retries AND f.archived_at IS NULL;
    IF NOT FOUND THEN
        INSERT INTO pgqueue.apps AS a (name, url, framework, synced_at)
        VALUES (p_app_name, p_app_url, 'durable-endpoint', now())
        ON CONFLICT (name) DO UPDATE SET url = excluded.url
        RETURNING a.id INTO v_app;
        INSERT INTO pgqueue.functions AS f (app_id, slug, name, url, config, retries)
        VALUES (v_app, p_fn_slug, p_fn_name, p_app_url, jsonb_build_object('endpoint', true), p_retries)
        ON CONFLICT (slug) DO UPDATE SET app_id = excluded.app_id, retries = excluded.retries,
                                         archived_at = NULL, updated_at = now()
        RETURNING f.id INTO v_fn;
    END IF;
    INSERT INTO pgqueue.events (id, name, data, ts) VALUES (p_event_id, p_event_name, p_event_data, p_event_ts);
    INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, started_at,
                              endpoint_url, endpoint_method)
    VALUES (p_run_id, v_fn, p_event_id, ARRAY[p_event_id], 'running', p_retries + 1, now(),
            p_endpoint_url, p_endpoint_method)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN  -- the same run id, sent twice at once
        RETURN QUERY SELECT 'exists', NULL::uuid, NULL::uuid, NULL::bigint, NULL::uuid, NULL::integer;
        RETURN;
    END IF;
    INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, state, lease_token,
                                     lease_expires_at, leased_by, leased_at)
    VALUES (p_run_id, v_fn, 'call', 'step', p_retries + 1, 'leased', v_token, p_lease_until, 'endpoint', now())
    RETURNING id INTO v_item;
    PERFORM pgqueue.run_counts_add_v1(ARRAY[v_fn], ARRAY['created'], ARRAY[now()], NULL);
    RETURN QUERY SELECT 'ok', v_app, v_fn, v_item, v_token, p_retries + 1;
END
$$;
