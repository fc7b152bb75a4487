-- 0007_hot_path: indexes for the claim and the worker's idle rounds at depth.
--
-- queue_items_leased_keys (GIN on the leased items' concurrency keys) changes on every claim and
-- every completion, and every claim with concurrency keys reads it. With GIN's default fastupdate
-- those changes pile up in the index's pending list, which every lookup then scans in full until
-- a vacuum; without it, each change goes straight into the tree.
ALTER INDEX pgqueue.queue_items_leased_keys SET (fastupdate = off);

-- The worker's "when is the next item due" (asked whenever a claim comes back empty) was a scan of
-- every available item: with 100,000 waits' timeout items queued, that scan ran on every idle
-- round. Parked (blocked) items are not due by time: they are unparked when a slot frees.
CREATE INDEX queue_items_next_due ON pgqueue.queue_items (run_at) WHERE state = 'available' AND NOT blocked;
