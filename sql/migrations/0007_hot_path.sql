-- 0007_hot_path: the claim's concurrency-key counts stay index lookups under churn.
--
-- queue_items_leased_keys (GIN on the leased items' concurrency keys) changes on every claim and
-- every completion. With GIN's default fastupdate, those changes pile up in the index's pending
-- list, and every lookup scans that whole list: at a few thousand claims per second a count per
-- key took about a millisecond. Without it, each change goes straight into the tree and a lookup
-- is a probe again.
ALTER INDEX pgqueue.queue_items_leased_keys SET (fastupdate = off);
