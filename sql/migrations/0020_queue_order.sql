-- 0020_queue_order: the queue's order, as Inngest's (issue 26).
--
-- Why: a function's items were ordered by their own enqueue time, so every run's second and third
-- calls queued behind every newer run's first call and each run took as long as the whole backlog
-- (a function with concurrency 2 and 30 runs of three 0.3 s steps: the first runs ended after 14 s).
-- Inngest scores a start, step or step-error item on its first attempt and due within 2 s by its
-- run's start time (from the run id) minus the run's priority factor: a busy function finishes its
-- older runs before it starts newer ones. Retries, sleeps and items scheduled further ahead keep
-- their own time. (Most continuations never reach the queue any more: the group commit lets a run
-- continue on its call's lease, pgqueue.complete_v2; this orders the ones that do.)
CREATE OR REPLACE FUNCTION pgqueue.queue_items_sort_at_v2()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started timestamptz;
BEGIN
    IF NEW.kind = 'call' AND NEW.attempt = 0 AND NEW.run_at <= now() + interval '2 seconds' THEN
        v_started := pgqueue.ulid_time_v1(NEW.run_id);
    END IF;
    NEW.sort_at := least(coalesce(v_started, NEW.run_at), NEW.run_at) - make_interval(secs => NEW.priority_s);
    RETURN NEW;
END
$$;
DROP TRIGGER queue_items_sort_at ON pgqueue.queue_items;
CREATE TRIGGER queue_items_sort_at BEFORE INSERT OR UPDATE OF run_at, priority_s, attempt ON pgqueue.queue_items
    FOR EACH ROW EXECUTE FUNCTION pgqueue.queue_items_sort_at_v2();

-- Read by no statement since the claim reads each function's due items (queue_items_due); one
-- index less to write on every item queued.
DROP INDEX pgqueue.queue_items_due_any;

-- Counts of what the rescuer's round had to catch up on, for /metrics: leases that expired, and
-- parked items whose concurrency slot was free (a wake-up the normal path missed: none expected).
CREATE TABLE pgqueue.housekeeping_counts (
    name        text PRIMARY KEY,
    n           bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgqueue.housekeeping_counts (name) VALUES ('leases_expired'), ('missed_unparks');
