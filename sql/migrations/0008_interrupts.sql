-- 0008_interrupts: every way an item goes back to the queue is bounded, and timeouts.finish is
-- scheduled in the claim transaction.
--
-- `interrupts` counts the times the engine itself handed an item back without the app's answer
-- being applied: its lease expired (worker crash, hung call), applying the answer failed (engine
-- error), or an executor invocation reached its deadline. It is separate from `attempt` (the
-- app's own failures, which the SDK sees), and capped: at pgqueue.MAX_INTERRUPTS the run fails
-- with a named error (LeaseExpired, EngineError, CallTimedOut) instead of looping forever.
ALTER TABLE pgqueue.queue_items ADD COLUMN interrupts integer NOT NULL DEFAULT 0;

-- timeouts.finish in milliseconds, parsed from the config at sync: claim_v3 schedules the
-- $finish-timeout item in the same transaction that marks a run running, so a worker dying right
-- after its claim can no longer lose it.
ALTER TABLE pgqueue.functions ADD COLUMN finish_timeout_ms bigint CHECK (finish_timeout_ms >= 0);

-- Functions synced before this migration: the duration strings the SDKs send ("30s", "1h30m",
-- bare seconds). Anything else stays NULL, as an unparsable duration is ignored at sync too.
UPDATE pgqueue.functions f
SET finish_timeout_ms = d.ms
FROM (
    SELECT fn.id,
           CASE
               WHEN fn.config -> 'timeouts' ->> 'finish' ~ '^\d+(\.\d+)?$'
                   THEN round((fn.config -> 'timeouts' ->> 'finish')::numeric * 1000)::bigint
               WHEN fn.config -> 'timeouts' ->> 'finish' ~ '^(\d+(\.\d+)?(ms|s|m|h|d|w))+$'
                   THEN (SELECT round(sum(m[1]::numeric * CASE m[2] WHEN 'ms' THEN 1 WHEN 's' THEN 1000
                                                   WHEN 'm' THEN 60000 WHEN 'h' THEN 3600000
                                                   WHEN 'd' THEN 86400000 ELSE 604800000 END))::bigint
                         FROM regexp_matches(fn.config -> 'timeouts' ->> 'finish',
                                             '(\d+(?:\.\d+)?)(ms|s|m|h|d|w)', 'g') AS m)
           END AS ms
    FROM pgqueue.functions fn
    WHERE fn.config -> 'timeouts' ->> 'finish' IS NOT NULL
) d
WHERE f.id = d.id AND d.ms IS NOT NULL;
