-- 0006_inspection: indexes for the inspection views, pgqueue.metrics() and retention.
--
-- runs had only (created_at) and (function_id, created_at) indexes, so "live runs", "ended in the
-- last hour" (metrics, recent_failures) and "ended before the retention cutoff" (the pruner) were
-- sequential scans of the largest table. The live index stays tiny (live runs are few); the ended
-- index grows with finished runs and shrinks as retention deletes them.
CREATE INDEX runs_live ON pgqueue.runs (status, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_ended ON pgqueue.runs (ended_at) WHERE ended_at IS NOT NULL;
-- Retention keeps events still waiting in the runner's inbox; this makes that check an index probe.
CREATE INDEX event_inbox_event ON pgqueue.event_inbox (event_id);
