-- Pauses are runs waiting for an event (waitForEvent, cancelOn, invoke; sql/migrations/0002).

-- pgqueue.pause_paths_prune_v1: forget the (event name, match path) pairs no pause uses any more
-- ('*' stands for the pauses without an indexed path); the runner looks every remembered path up
-- for each event of its name. Returns how many. The paths of inngest/function.finished, .failed
-- and .cancelled stay: pgqueue.finish_heard_v1 reads them as "a pause was ever created for these"
-- to decide whether finished runs write those events at all (a handful of rows).
-- Race: a pause being created inserts its path with ON CONFLICT DO NOTHING, so when the path is
-- already there its transaction neither writes nor locks that row, and a delete that cannot see
-- the uncommitted pause would take the path from under it. But every such INSERT holds ROW
-- EXCLUSIVE on the table until its transaction ends, and SHARE ROW EXCLUSIVE waits for those and
-- keeps new ones out: the delete then sees every pause committed or being created. The wait is
-- bounded (lock_timeout: lock_not_available, try again later), and the lock lasts this statement.
CREATE OR REPLACE FUNCTION pgqueue.pause_paths_prune_v1()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    n integer;
BEGIN
    LOCK TABLE pgqueue.pause_paths IN SHARE ROW EXCLUSIVE MODE;
    -- A new statement, so a snapshot taken after the lock: every pause whose path it protects is
    -- committed by now.
    DELETE FROM pgqueue.pause_paths pp
    WHERE pp.event_name NOT IN ('inngest/function.finished', 'inngest/function.failed', 'inngest/function.cancelled')
      AND CASE WHEN pp.match_path = '*'
               THEN NOT EXISTS (SELECT 1 FROM pgqueue.pauses p
                                WHERE p.event_name = pp.event_name AND p.match_path IS NULL)
               ELSE NOT EXISTS (SELECT 1 FROM pgqueue.pauses p
                                WHERE p.event_name = pp.event_name AND p.match_path = pp.match_path)
          END;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
