-- 0017: history in time partitions, and half the writes per run.
--
-- events, runs, steps and attempts become tables partitioned by range of a ULID: events and runs by
-- their own id, steps and attempts by their run's id, so a run and everything that hangs off it
-- live in partitions with the same bounds. A ULID sorts by its creation time, so a bound is the
-- ULID prefix of an instant (pgqueue.ulid_bound_v1) and the id itself is the partition key:
-- `ON CONFLICT (id)`, every lookup by id and every (run_id, step_id) probe still hit one index of
-- one partition. Retention drops whole partitions (pgqueue.history_expire_v1, sql/functions/
-- history.sql) instead of deleting rows: no WAL per row, no dead tuples, space returned at once;
-- what it must keep (live runs...) moves into one small ARCHIVE partition below every set. A
-- DEFAULT partition takes ids that are not ULIDs of a covered time (none are made by pgqueue).
--
-- The keys are compared in the "C" collation, whatever the database's default: bounds and ids are
-- uppercase Crockford base32 of equal length, ordered by their bytes. So is every other column that
-- holds a run or event id: a join compares in the collation of its sides, and an index of another
-- collation cannot serve it (tests/migrations checks every such column).
--
-- Foreign keys to and from these tables are gone: each FK check locked the referenced row (a WAL
-- record per insert, and MultiXacts on the hot functions rows), and a partition cannot be dropped
-- while another table references it. The functions that write a run's rows hold the run's lock,
-- functions and apps are never deleted (archived), and retention keeps every run that is live.
--
-- Indexes are those a lookup needs, on columns no update of a run changes, so every update (start,
-- request version, end) can be HOT (`runs` keeps 25% of each page free for them). Live runs are
-- listed in the small live_runs table (triggers keep it), not by a partial index whose membership
-- changes when a run ends. A run's step count and state size are no longer counters on it (an
-- update per step) but its steps' count and sum of `size`; a successful call is recorded on the
-- step (or run) it produced, not as an attempts row. Together: half the WAL per run. The link from an event to its
-- runs is a btree on runs.event_id, plus a GIN on event_ids only for runs of more than one event
-- (batches): the GIN on every run cost ~4.5 KB of WAL per run. Listing by time uses the ids.
-- Existing rows are copied into the new tables (documented in docs/operations.md).

-- The 26-character ULID bound of an instant: its millisecond time in 10 Crockford base32 characters,
-- then the lowest entropy. Every ULID made at or after `p_at` sorts at or after it ("C" collation).
CREATE OR REPLACE FUNCTION pgqueue.ulid_bound_v1(p_at timestamptz)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM p_at) * 1000)::bigint;
    out text := '';
BEGIN
    IF ms < 0 OR ms >= 2::bigint ^ 48 THEN
        RAISE EXCEPTION 'no ULID bound for %: outside the 48-bit millisecond range', p_at;
    END IF;
    FOR i IN 1..10 LOOP
        out := substr(alphabet, (ms % 32)::integer + 1, 1) || out;
        ms := ms / 32;
    END LOOP;
    RETURN out || '0000000000000000';
END
$$;

-- The creation time of a ULID (NULL for a text that is not one).
CREATE OR REPLACE FUNCTION pgqueue.ulid_time_v1(p_id text)
RETURNS timestamptz
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := 0;
    digit integer;
BEGIN
    IF p_id IS NULL OR length(p_id) <> 26 THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..10 LOOP
        digit := strpos(alphabet, substr(p_id, i, 1)) - 1;
        IF digit < 0 OR (i = 1 AND digit > 7) THEN
            RETURN NULL;
        END IF;
        ms := ms * 32 + digit;
    END LOOP;
    RETURN to_timestamp(ms / 1000.0);
END
$$;

-- One row per partition set: the four tables' partitions with these bounds. `runs_archived_at`:
-- the set's runs, steps and attempts expired (what retention keeps moved into the archive
-- partitions, the rest dropped); the row goes when its events have too.
CREATE TABLE pgqueue.history_partitions (
    suffix            text PRIMARY KEY,            -- p20261207t0000: the tables are runs_<suffix>, ...
    lo                text COLLATE "C" NOT NULL,   -- ULID bounds [lo, hi)
    hi                text COLLATE "C" NOT NULL,
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL,
    runs_archived_at  timestamptz,
    CHECK (lo < hi AND starts_at < ends_at)
);

-- Create the partition set [p_starts, p_ends) of the four history tables (if missing), attached to
-- their parents. Called by this migration and, ahead of time, by the rescuer (history_ensure_v1):
-- never on the hot path. A partition is made apart and attached, which takes a SHARE UPDATE
-- EXCLUSIVE lock on the parent (reads and writes go on) and briefly locks the DEFAULT partition,
-- which it checks holds no row of the new range.
CREATE OR REPLACE FUNCTION pgqueue.history_partition_create_v1(p_starts timestamptz, p_ends timestamptz)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suffix text := 'p' || to_char(p_starts AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
    v_lo text := pgqueue.ulid_bound_v1(p_starts);
    v_hi text := pgqueue.ulid_bound_v1(p_ends);
    v_table text;
BEGIN
    IF EXISTS (SELECT 1 FROM pgqueue.history_partitions h WHERE h.suffix = v_suffix) THEN
        RETURN NULL;
    END IF;
    FOREACH v_table IN ARRAY ARRAY['events', 'runs', 'steps', 'attempts'] LOOP
        EXECUTE format('CREATE TABLE pgqueue.%I (LIKE pgqueue.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
                       v_table || '_' || v_suffix, v_table);
        -- History is written once and read rarely: the insert-driven autovacuum freezes each page
        -- while it is recent (freeze_min_age 0), so no anti-wraparound vacuum rewrites a day later.
        EXECUTE format('ALTER TABLE pgqueue.%I SET (autovacuum_freeze_min_age = 0, fillfactor = %s)',
                       v_table || '_' || v_suffix, CASE v_table WHEN 'runs' THEN 85 ELSE 100 END);
        EXECUTE format('ALTER TABLE pgqueue.%I ATTACH PARTITION pgqueue.%I FOR VALUES FROM (%L) TO (%L)',
                       v_table, v_table || '_' || v_suffix, v_lo, v_hi);
    END LOOP;
    INSERT INTO pgqueue.history_partitions (suffix, lo, hi, starts_at, ends_at)
    VALUES (v_suffix, v_lo, v_hi, p_starts, p_ends);
    RETURN v_suffix;
END
$$;

-- The views that read these tables are re-created from sql/views after every migration.
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT DISTINCT c.relname FROM pg_depend d
             JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class c ON c.oid = w.ev_class
             WHERE d.refobjid IN ('pgqueue.events'::regclass, 'pgqueue.runs'::regclass,
                                  'pgqueue.steps'::regclass, 'pgqueue.attempts'::regclass,
                                  'pgqueue.queue_items'::regclass, 'pgqueue.pauses'::regclass,
                                  'pgqueue.batches'::regclass, 'pgqueue.debounces'::regclass,
                                  'pgqueue.singletons'::regclass, 'pgqueue.idempotency_keys'::regclass,
                                  'pgqueue.cron_ticks'::regclass, 'pgqueue.event_inbox'::regclass,
                                  'pgqueue.event_dedupe'::regclass)
               AND c.relkind = 'v' LOOP
        EXECUTE format('DROP VIEW IF EXISTS pgqueue.%I CASCADE', v.relname);
    END LOOP;
END
$$;

ALTER TABLE pgqueue.events RENAME TO events_v15;
ALTER TABLE pgqueue.runs RENAME TO runs_v15;
ALTER TABLE pgqueue.steps RENAME TO steps_v15;
ALTER TABLE pgqueue.attempts RENAME TO attempts_v15;
ALTER TABLE pgqueue.events_v15 RENAME CONSTRAINT events_pkey TO events_v15_pkey;
ALTER TABLE pgqueue.runs_v15 RENAME CONSTRAINT runs_pkey TO runs_v15_pkey;
ALTER TABLE pgqueue.steps_v15 RENAME CONSTRAINT steps_pkey TO steps_v15_pkey;
ALTER TABLE pgqueue.attempts_v15 RENAME CONSTRAINT attempts_pkey TO attempts_v15_pkey;

CREATE TABLE pgqueue.events (
    id           text COLLATE "C" NOT NULL,       -- internal ULID, returned to the sender
    name         text NOT NULL,
    data         jsonb NOT NULL,
    "user"       jsonb,
    ts           bigint NOT NULL,                 -- milliseconds since the epoch
    v            text,
    external_id  text,                            -- the sender's own `id` (idempotency key)
    received_at  timestamptz NOT NULL DEFAULT now(),
    skip_reason  text,                            -- why the event started nothing, when known
    CONSTRAINT events_pkey PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE INDEX events_name ON pgqueue.events (name, id);

CREATE TABLE pgqueue.runs (
    id               text COLLATE "C" NOT NULL,   -- ULID
    function_id      uuid NOT NULL,
    event_id         text COLLATE "C" NOT NULL,   -- the (first) triggering event
    event_ids        text[] COLLATE "C" NOT NULL, -- every event of the run (batches)
    status           pgqueue.run_status NOT NULL DEFAULT 'queued',
    max_attempts     integer NOT NULL CONSTRAINT runs_max_attempts_check CHECK (max_attempts >= 1),
    request_version  integer NOT NULL DEFAULT -1,
    force_step_plan  boolean NOT NULL DEFAULT false,
    output           jsonb,
    error            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    ended_at         timestamptz,
    correlation_id   text,
    replay_of        text COLLATE "C",
    ckeys            text[] NOT NULL DEFAULT '{}',
    climits          integer[] NOT NULL DEFAULT '{}',
    priority_s       integer NOT NULL DEFAULT 0 CONSTRAINT runs_priority_s_check CHECK (priority_s BETWEEN -43200 AND 43200),
    endpoint_url     text,
    endpoint_method  text,
    -- the call that returned the function's value (when the group commit stored it): its start and
    -- attempt, so it needs no attempts row (pgqueue.calls shows it as one)
    final_call_started_at timestamptz,
    final_call_attempt    integer,
    final_call_item_id    bigint,
    CONSTRAINT runs_pkey PRIMARY KEY (id),
    CONSTRAINT runs_check CHECK ((status IN ('queued', 'running')) = (ended_at IS NULL))
) PARTITION BY RANGE (id);
CREATE INDEX runs_function ON pgqueue.runs (function_id, id);
CREATE INDEX runs_event ON pgqueue.runs (event_id);
CREATE INDEX runs_batch_events ON pgqueue.runs USING gin (event_ids) WHERE cardinality(event_ids) > 1;
-- One row per memoised step; the primary key makes "first stored output wins" a constraint.
CREATE TABLE pgqueue.steps (
    run_id      text COLLATE "C" NOT NULL,
    step_id     text NOT NULL,                    -- hashed step id, as the SDK reports it
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    name        text,
    op          text NOT NULL,
    memo        jsonb NOT NULL,                   -- exactly the value handed back in `steps`
    -- the step's share of the run's state limit; a run's step count and state size are its steps'
    -- count and sum, read when a step is stored (they were counters on runs: an update per step)
    size        integer GENERATED ALWAYS AS (octet_length(memo::text)) STORED,
    attempt     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the call that returned this step's output (started_at NULL: no call, e.g. a signal): its
    -- start, its queue item, and whether that item was the step's own (a planned, parallel step)
    -- rather than a discovery call (NULL); it needs no attempts row (pgqueue.calls shows it as one)
    started_at   timestamptz,
    call_item_id bigint,
    call_planned boolean,
    CONSTRAINT steps_pkey PRIMARY KEY (run_id, step_id)
) PARTITION BY RANGE (run_id);

-- Append-only history of the calls and wake-ups that did not end in a stored step or the run's
-- value (retries, failures, sleeps, waits...); with those, pgqueue.calls is every call.
CREATE TABLE pgqueue.attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    run_id       text COLLATE "C" NOT NULL,
    item_id      bigint NOT NULL,
    step_id      text NOT NULL,
    attempt      integer NOT NULL,
    outcome      text NOT NULL,                   -- ok | retry | failed | discarded
    status_code  integer,
    error        jsonb,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT attempts_pkey PRIMARY KEY (run_id, id)
) PARTITION BY RANGE (run_id);

CREATE TABLE pgqueue.events_default PARTITION OF pgqueue.events DEFAULT;
CREATE TABLE pgqueue.runs_default PARTITION OF pgqueue.runs DEFAULT;
CREATE TABLE pgqueue.steps_default PARTITION OF pgqueue.steps DEFAULT;
CREATE TABLE pgqueue.attempts_default PARTITION OF pgqueue.attempts DEFAULT;

-- An event older than its run by more than an hour (a replay, a runner that caught up after an
-- outage) is pinned by it: its partition may expire before the run's, and retention keeps pinned
-- events of runs that still exist. Events of the same or the previous partition need no pin:
-- events partitions expire one partition after the runs of the same bounds.
CREATE TABLE pgqueue.event_pins (
    event_id  text COLLATE "C" NOT NULL,
    run_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (event_id, run_id)
);
CREATE INDEX event_pins_run ON pgqueue.event_pins (run_id);

-- One row per run that is not over: what retention must keep and what the dashboard counts as
-- live, without an index on runs that a run's end would change. A run that outlived its creation
-- by over an hour keeps its row, with ended_at, until retention has kept it that long after its
-- end (it may end after its partition expired).
CREATE TABLE pgqueue.live_runs (
    run_id       text COLLATE "C" PRIMARY KEY,
    function_id  uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    ended_at     timestamptz
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX live_runs_function ON pgqueue.live_runs (function_id, run_id);  -- bulk cancel, pause, counts

-- Runs that failed, newest last: what "recent failures" lists, without an index on runs.status
-- (any index on status would make every run's start and end a non-HOT update).
CREATE TABLE pgqueue.run_failures (
    run_id       text COLLATE "C" PRIMARY KEY,
    function_id  uuid NOT NULL,
    ended_at     timestamptz NOT NULL
);
CREATE INDEX run_failures_ended ON pgqueue.run_failures (ended_at);
CREATE INDEX run_failures_function ON pgqueue.run_failures (function_id, ended_at);

-- Runs per minute and function, by how they ended, and a histogram of their durations (bucket b
-- counts runs of 2^(b-2) .. 2^(b-1) ms; the first takes everything under 1 ms, the last everything
-- over ~4.7 hours): what charts and /metrics read instead of counting runs. Written once per
-- statement that makes or ends runs (a group commit ends many), sharded by backend so concurrent
-- transactions do not queue on one row.
CREATE TABLE pgqueue.run_counts (
    minute       timestamptz NOT NULL,
    function_id  uuid NOT NULL,
    shard        smallint NOT NULL,
    created      integer NOT NULL DEFAULT 0,
    completed    integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    cancelled    integer NOT NULL DEFAULT 0,
    duration_ms  integer[] NOT NULL DEFAULT array_fill(0, ARRAY[25]),
    PRIMARY KEY (minute, function_id, shard)
) WITH (fillfactor = 70);

-- Every live run is in live_runs, whatever inserts it (retention keeps what live_runs lists): a
-- row trigger, cheap (one insert). The end of a run is recorded by the statements that end runs,
-- set-based (pgqueue.runs_ended_v1, sql/functions/history.sql); the rescuer drops rows of runs
-- that ended without it, so a missed end only keeps a run longer.
CREATE OR REPLACE FUNCTION pgqueue.runs_live_v1()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgqueue.live_runs (run_id, function_id, created_at) VALUES (NEW.id, NEW.function_id, NEW.created_at)
    ON CONFLICT (run_id) DO NOTHING;
    RETURN NULL;
END
$$;

-- Partitions for the rows there are (from the day of the oldest ULID) up to three days ahead.
DO $$
DECLARE
    v_oldest timestamptz;
    v_day timestamptz;
    v_table text;
BEGIN
    SELECT least(min(pgqueue.ulid_time_v1(e.id)), now()) INTO v_oldest FROM pgqueue.events_v15 e;
    SELECT least(v_oldest, min(pgqueue.ulid_time_v1(r.id)), now()) INTO v_oldest FROM pgqueue.runs_v15 r;
    v_day := date_trunc('day', coalesce(v_oldest, now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    -- the archive partitions: below every set (what retention keeps of expired sets)
    FOREACH v_table IN ARRAY ARRAY['events', 'runs', 'steps', 'attempts'] LOOP
        EXECUTE format('CREATE TABLE pgqueue.%I PARTITION OF pgqueue.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                       v_table || '_archive', v_table, pgqueue.ulid_bound_v1(v_day));
    END LOOP;
    WHILE v_day < now() + interval '3 days' LOOP
        PERFORM pgqueue.history_partition_create_v1(v_day, v_day + interval '1 day');
        v_day := v_day + interval '1 day';
    END LOOP;
END
$$;

INSERT INTO pgqueue.events (id, name, data, "user", ts, v, external_id, received_at, skip_reason)
SELECT id, name, data, "user", ts, v, external_id, received_at, skip_reason FROM pgqueue.events_v15;
INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts, request_version,
                          force_step_plan, output, error, created_at, started_at, ended_at, correlation_id,
                          replay_of, ckeys, climits, priority_s, endpoint_url, endpoint_method)
SELECT id, function_id, event_id, event_ids, status, max_attempts, request_version, force_step_plan, output,
       error, created_at, started_at, ended_at, correlation_id, replay_of, ckeys, climits, priority_s, endpoint_url,
       endpoint_method
FROM pgqueue.runs_v15;
INSERT INTO pgqueue.steps (run_id, step_id, seq, name, op, memo, attempt, created_at) OVERRIDING SYSTEM VALUE
SELECT run_id, step_id, seq, name, op, memo, attempt, created_at FROM pgqueue.steps_v15;
INSERT INTO pgqueue.attempts (id, run_id, item_id, step_id, attempt, outcome, status_code, error, started_at,
                              ended_at) OVERRIDING SYSTEM VALUE
SELECT id, run_id, item_id, step_id, attempt, outcome, status_code, error, started_at, ended_at
FROM pgqueue.attempts_v15;
-- The identities continue after the copied rows.
SELECT setval(pg_get_serial_sequence('pgqueue.steps', 'seq'),
              greatest(1, (SELECT coalesce(max(seq), 0) FROM pgqueue.steps_v15)),
              (SELECT count(*) > 0 FROM pgqueue.steps_v15));
SELECT setval(pg_get_serial_sequence('pgqueue.attempts', 'id'),
              greatest(1, (SELECT coalesce(max(id), 0) FROM pgqueue.attempts_v15)),
              (SELECT count(*) > 0 FROM pgqueue.attempts_v15));
-- The live runs and the per-minute counts of the copied runs, set-based (the triggers come after).
INSERT INTO pgqueue.live_runs (run_id, function_id, created_at, ended_at)
SELECT r.id, r.function_id, r.created_at, r.ended_at FROM pgqueue.runs r
WHERE r.ended_at IS NULL OR r.ended_at - r.created_at > interval '1 hour';
INSERT INTO pgqueue.run_failures (run_id, function_id, ended_at)
SELECT r.id, r.function_id, r.ended_at FROM pgqueue.runs r WHERE r.status = 'failed';
INSERT INTO pgqueue.run_counts (minute, function_id, shard, created)
SELECT date_trunc('minute', r.created_at), r.function_id, 0, count(*) FROM pgqueue.runs r GROUP BY 1, 2;
INSERT INTO pgqueue.run_counts AS c (minute, function_id, shard, completed, failed, cancelled)
SELECT date_trunc('minute', r.ended_at), r.function_id, 0, count(*) FILTER (WHERE r.status = 'completed'),
       count(*) FILTER (WHERE r.status = 'failed'), count(*) FILTER (WHERE r.status = 'cancelled')
FROM pgqueue.runs r WHERE r.ended_at IS NOT NULL GROUP BY 1, 2
ON CONFLICT (minute, function_id, shard) DO UPDATE
SET completed = EXCLUDED.completed, failed = EXCLUDED.failed, cancelled = EXCLUDED.cancelled;
CREATE TRIGGER runs_live AFTER INSERT ON pgqueue.runs
    FOR EACH ROW WHEN (NEW.ended_at IS NULL) EXECUTE FUNCTION pgqueue.runs_live_v1();

-- Cross-time events of the copied runs.
INSERT INTO pgqueue.event_pins (event_id, run_id)
SELECT DISTINCT e.eid, r.id FROM pgqueue.runs_v15 r CROSS JOIN LATERAL unnest(r.event_ids) AS e(eid)
WHERE e.eid COLLATE "C" < pgqueue.ulid_bound_v1(pgqueue.ulid_time_v1(r.id) - interval '1 hour')
ON CONFLICT DO NOTHING;

ALTER TABLE pgqueue.queue_items DROP CONSTRAINT queue_items_run_id_fkey;
ALTER TABLE pgqueue.queue_items ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.pauses ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.batches ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.debounces ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.singletons ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.idempotency_keys ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.cron_ticks ALTER COLUMN run_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.event_inbox ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.event_dedupe ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE pgqueue.pauses DROP CONSTRAINT pauses_run_id_fkey;
ALTER TABLE pgqueue.debounces DROP CONSTRAINT debounces_run_id_fkey;
ALTER TABLE pgqueue.batches DROP CONSTRAINT batches_run_id_fkey;
DROP TABLE pgqueue.attempts_v15, pgqueue.steps_v15, pgqueue.runs_v15, pgqueue.events_v15;

-- The leased items' concurrency keys, for the items that have any: every lease of an item without
-- keys put an "empty" entry into this GIN (~1.1 KB of WAL each, a quarter of a run's WAL).
DROP INDEX pgqueue.queue_items_leased_keys;
CREATE INDEX queue_items_leased_keys ON pgqueue.queue_items USING gin (ckeys) WITH (fastupdate = off)
    WHERE state = 'leased' AND cardinality(ckeys) > 0;

-- The queue and the small tables that churn: vacuumed after a fixed number of dead rows rather
-- than 20% of the table, so the claim's index scans do not walk dead entries between vacuums
-- (claim_v6 read 1.5-3.7x more blocks per call after 1M runs of churn at the defaults).
ALTER TABLE pgqueue.queue_items SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
                                     autovacuum_vacuum_insert_scale_factor = 0,
                                     autovacuum_vacuum_insert_threshold = 10000,
                                     autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                                     autovacuum_vacuum_cost_delay = 0);
ALTER TABLE pgqueue.event_inbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
                                     autovacuum_vacuum_cost_delay = 0);
ALTER TABLE pgqueue.pauses SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
