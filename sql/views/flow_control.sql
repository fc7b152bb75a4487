-- Flow-control inspection: plain-SQL views over the queue and flow-control state.
-- Re-applied by `pgqueue migrate` (CREATE OR REPLACE); the column lists are a stable contract.

-- Per function and concurrency key: queued, parked (waiting for the key), leased, and the limit.
CREATE OR REPLACE VIEW pgqueue.concurrency_usage AS
WITH keyed AS (
    SELECT q.function_id, k.key, q.climits[k.pos] AS "limit", q.state, q.blocked
    FROM pgqueue.queue_items q
    CROSS JOIN LATERAL unnest(q.ckeys) WITH ORDINALITY AS k(key, pos)
)
SELECT f.slug AS function_slug, keyed.key AS concurrency_key, max(keyed."limit") AS "limit",
       count(*) FILTER (WHERE keyed.state = 'leased') AS in_use,
       count(*) FILTER (WHERE keyed.state = 'available' AND NOT keyed.blocked) AS queued,
       count(*) FILTER (WHERE keyed.blocked) AS parked,
       hashtextextended(keyed.key, 0) AS advisory_lock_key
FROM keyed JOIN pgqueue.functions f ON f.id = keyed.function_id
GROUP BY f.slug, keyed.key;

-- Per function: due, scheduled (future), parked and leased work.
CREATE OR REPLACE VIEW pgqueue.flow_queue AS
SELECT f.slug AS function_slug,
       count(*) FILTER (WHERE q.state = 'available' AND NOT q.blocked AND q.run_at <= now()) AS due,
       count(*) FILTER (WHERE q.state = 'available' AND q.run_at > now()) AS scheduled,
       count(*) FILTER (WHERE q.blocked) AS parked,
       count(*) FILTER (WHERE q.state = 'leased') AS leased,
       min(q.run_at) FILTER (WHERE q.state = 'available' AND NOT q.blocked) AS oldest_due_at
FROM pgqueue.queue_items q JOIN pgqueue.functions f ON f.id = q.function_id
GROUP BY f.slug;

-- Throttle and rate-limit buckets (GCRA): when each key next admits a start or a run.
CREATE OR REPLACE VIEW pgqueue.throttle_state AS
SELECT split_part(g.key, ':', 1) AS kind,
       f.slug AS function_slug,
       substr(g.key, length(split_part(g.key, ':', 1)) + length(split_part(g.key, ':', 2)) + 3) AS key,
       g.tat AS theoretical_arrival_at,
       greatest(g.tat - now(), interval '0') AS busy_for,
       g.updated_at
FROM pgqueue.gcra_state g
LEFT JOIN pgqueue.functions f ON f.id::text = split_part(g.key, ':', 2);

-- Open debounce windows and batches, with the run waiting for each.
CREATE OR REPLACE VIEW pgqueue.pending_debounces AS
SELECT f.slug AS function_slug, d.key, d.run_id, r.event_id AS latest_event_id, d.first_at, q.run_at AS starts_at
FROM pgqueue.debounces d
JOIN pgqueue.functions f ON f.id = d.function_id
JOIN pgqueue.runs r ON r.id = d.run_id
LEFT JOIN pgqueue.queue_items q ON q.run_id = d.run_id AND q.step_id = 'step';

CREATE OR REPLACE VIEW pgqueue.pending_batches AS
SELECT f.slug AS function_slug, b.key, b.run_id, b.size, cardinality(r.event_ids) AS events, b.first_at,
       q.run_at AS starts_at
FROM pgqueue.batches b
JOIN pgqueue.functions f ON f.id = b.function_id
JOIN pgqueue.runs r ON r.id = b.run_id
LEFT JOIN pgqueue.queue_items q ON q.run_id = b.run_id AND q.step_id = 'step';
