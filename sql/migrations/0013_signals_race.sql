-- 0013_signals_race: step.waitForSignal, and the parallelMode "race" flag of steps.
--
-- A signal wait is a pause of kind 'signal' named by its signal instead of an event: at most one
-- pause holds a given signal name (pauses_one_per_signal), which is how a second run waiting on
-- the same signal is refused (onConflict "fail") or takes the signal over ("replace": the earlier
-- pause keeps waiting, with `signal` cleared, until its timeout resumes it with null). POST
-- /v1/signals and pgqueue.send_signal() find the holder by this index.
--
-- race: the item (a planned step, a sleep, a wait timeout) or pause (a wait, an invoke, a signal)
-- of a step reported with opts.parallelMode = "race". When such a step ends, the run's next
-- discovery call is queued at once, even while sibling steps are still pending, so user code
-- awaiting Promise.race / group.parallel(race) continues with the first step to finish.

ALTER TABLE pgqueue.pauses DROP CONSTRAINT pauses_kind_check;
ALTER TABLE pgqueue.pauses ADD CONSTRAINT pauses_kind_check
    CHECK (kind IN ('wait', 'cancel', 'invoke', 'signal'));
ALTER TABLE pgqueue.pauses ALTER COLUMN event_name DROP NOT NULL;
ALTER TABLE pgqueue.pauses
    ADD COLUMN signal text,
    ADD COLUMN race boolean NOT NULL DEFAULT false;
-- Signal pauses name no event (so event matching never sees them); every other pause does.
ALTER TABLE pgqueue.pauses ADD CONSTRAINT pauses_event_or_signal CHECK ((kind = 'signal') = (event_name IS NULL));
ALTER TABLE pgqueue.pauses ADD CONSTRAINT pauses_signal_only_for_signals CHECK (signal IS NULL OR kind = 'signal');
CREATE UNIQUE INDEX pauses_one_per_signal ON pgqueue.pauses (signal) WHERE signal IS NOT NULL;

ALTER TABLE pgqueue.queue_items ADD COLUMN race boolean NOT NULL DEFAULT false;
