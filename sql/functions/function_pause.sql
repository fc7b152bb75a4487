-- Pausing a function holds its queued work; resuming releases it.
--
-- A paused function starts no runs (the runner and the cron scheduler skip it), and none of its
-- queued items is claimed: calls, sleeps, waitForEvent/invoke timeouts and timeouts.start/finish
-- all wait until it is resumed. Calls already in flight finish, and what they queue is held too.
-- Held items are parked like items over a concurrency limit, on the key '$paused:<function id>'
-- (concurrency keys start with 'fn:', 'env:' or 'account:'), so every index, view and query that
-- skips parked items skips them without a join; resuming unparks them and the claim takes them in
-- their order (sort_at), parking any that are over a concurrency limit on their key again.
-- The claim (claim_v4) also skips paused functions outright, once per function: work that became
-- available after the pause (an in-flight call's next step, a retry) is held from the start, and
-- the rescuer parks it with the rest (function_hold_paused_v1).
-- Lock order: the function row first, then its items; a pause and a resume of the same function
-- serialise on the function row.

-- pgqueue.function_pause_v1: pause (p_paused) or resume a function. Returns the function (no row
-- when it does not exist) and how many items were held or released. A resume wakes the workers
-- when it released anything.
CREATE OR REPLACE FUNCTION pgqueue.function_pause_v1(p_function_id uuid, p_paused boolean)
RETURNS TABLE (id uuid, slug text, paused_at timestamptz, items integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    f       record;
    v_key   text := '$paused:' || p_function_id::text;
    n       integer := 0;
    i       integer;
BEGIN
    UPDATE pgqueue.functions
    SET paused_at = CASE WHEN p_paused THEN coalesce(functions.paused_at, now()) END, updated_at = now()
    WHERE functions.id = p_function_id
    RETURNING functions.id, functions.slug, functions.paused_at INTO f;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A new statement, so a new snapshot: it sees what a pause or resume that held the function
    -- row before us committed.
    -- Items are locked in id order, as the executor's group commit locks them.
    IF p_paused THEN
        -- due or scheduled (index queue_items_due), then those parked on a concurrency key
        UPDATE pgqueue.queue_items q SET blocked = true, blocked_key = v_key
        FROM (SELECT q1.id FROM pgqueue.queue_items q1
              WHERE q1.function_id = p_function_id AND q1.state = 'available' AND NOT q1.blocked
              ORDER BY q1.id FOR UPDATE) h
        WHERE q.id = h.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        UPDATE pgqueue.queue_items q SET blocked_key = v_key
        FROM (SELECT q1.id FROM pgqueue.queue_items q1
              WHERE q1.blocked AND q1.function_id = p_function_id AND q1.blocked_key <> v_key
              ORDER BY q1.id FOR UPDATE) h
        WHERE q.id = h.id;
        GET DIAGNOSTICS i = ROW_COUNT;
        n := n + i;
    ELSE
        UPDATE pgqueue.queue_items q SET blocked = false, blocked_key = NULL
        FROM (SELECT q1.id FROM pgqueue.queue_items q1
              WHERE q1.blocked AND q1.blocked_key = v_key
              ORDER BY q1.id FOR UPDATE) h
        WHERE q.id = h.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            PERFORM pg_notify('pgqueue_queue', '');
        END IF;
    END IF;
    RETURN QUERY SELECT f.id, f.slug, f.paused_at, n;
END
$$;

-- pgqueue.function_hold_paused_v1: park the items of paused functions that became available after
-- the pause (the claim already skips them; parked, they also leave the worker's next-due query and
-- show as paused in pgqueue.queue_depth). Run by the rescuer. A function row being paused or
-- resumed right now is skipped (SKIP LOCKED), and the rows it locks make a resume wait for this
-- statement, so nothing is parked for a function that is no longer paused. Returns how many.
CREATE OR REPLACE FUNCTION pgqueue.function_hold_paused_v1()
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH paused AS (
        SELECT f.id FROM pgqueue.functions f
        WHERE f.paused_at IS NOT NULL
        ORDER BY f.id
        FOR SHARE SKIP LOCKED
    ), late AS (
        SELECT q.id FROM pgqueue.queue_items q JOIN paused ON q.function_id = paused.id
        WHERE q.state = 'available' AND NOT q.blocked
        ORDER BY q.id
        FOR UPDATE OF q SKIP LOCKED
    ), held AS (
        UPDATE pgqueue.queue_items q SET blocked = true, blocked_key = '$paused:' || q.function_id::text
        FROM late WHERE q.id = late.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM held
$$;
