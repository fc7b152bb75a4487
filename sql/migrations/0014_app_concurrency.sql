-- 0014_app_concurrency: each worker's adaptive concurrency level per app, for operators (issue 15).
--
-- Why: a worker holds each app near its best in-flight level (pgqueue/queue/adaptive.py); the level
-- lives in the worker's memory, so each worker upserts its levels here every few seconds and the
-- pgqueue.app_concurrency view, /metrics and the dashboard read them. UNLOGGED: it is a
-- few rows rewritten every few seconds whose loss in a crash costs nothing (workers write them
-- again), so they need no WAL. Rows of a worker that stopped reporting are ignored by the view after
-- 30 s and deleted by the next report of any worker after 5 minutes.
CREATE UNLOGGED TABLE pgqueue.worker_app_levels (
    worker text NOT NULL,
    app_id uuid NOT NULL,
    concurrency_limit integer NOT NULL CHECK (concurrency_limit >= 0),
    in_flight integer NOT NULL CHECK (in_flight >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker, app_id)
);

-- pgqueue.app_concurrency: each app's adaptive concurrency (PGQUEUE_ADAPTIVE_CONCURRENCY): how many
-- calls the workers allow in flight to it right now, summed over the workers that reported in the
-- last 30 s, and how many are in flight. A worker holds each app near the level where its latency
-- stops growing (pgqueue/queue/adaptive.py); function concurrency limits apply on top. Apps no worker
-- has called lately have no row.
CREATE VIEW pgqueue.app_concurrency AS
SELECT l.app_id,
       a.name AS app_name,
       count(*)::integer AS workers,
       sum(l.concurrency_limit)::integer AS concurrency_limit,
       sum(l.in_flight)::integer AS in_flight,
       min(l.concurrency_limit) AS min_worker_limit,
       max(l.concurrency_limit) AS max_worker_limit,
       max(l.updated_at) AS updated_at
FROM pgqueue.worker_app_levels l
LEFT JOIN pgqueue.apps a ON a.id = l.app_id
WHERE l.updated_at > now() - interval '30 seconds'
GROUP BY l.app_id, a.name;

COMMENT ON VIEW pgqueue.app_concurrency IS
    'Adaptive concurrency per app: calls the workers allow in flight (sum over workers reporting in the last 30 s) and calls in flight.';
