-- 0012_claim_scale: the claim reads a bounded number of functions; housekeeping finds its rows by index.
--
-- claim_rotation: when more functions have due work than a claim takes, each claim starts its
-- round-robin at the next stride of the function list (pgqueue.claim_lease_v1), so consecutive
-- claims serve every function in turn while each reads only about as many functions as items it
-- takes. A sequence: no row is written or locked per claim (nextval is not transactional).
CREATE SEQUENCE pgqueue.claim_rotation AS bigint;

-- event_dedupe is pruned by expires_at every rescuer round (prune_expired_keys): without an
-- index that was a sequential scan of a day of dedupe windows (135 ms at 1,000,000 rows).
CREATE INDEX event_dedupe_expires ON pgqueue.event_dedupe (expires_at);

-- Expired cancelOn listeners are pruned by the rescuer (pause_expire_cancel_listeners); without an
-- index each round would read every pause, waits included.
CREATE INDEX pauses_cancel_expires ON pgqueue.pauses (expires_at) WHERE kind = 'cancel' AND expires_at IS NOT NULL;
