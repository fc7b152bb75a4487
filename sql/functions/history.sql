-- History at scale: the partitions of events, runs, steps and attempts (migration 0017) are made
-- ahead of time by the rescuer (history_ensure_v1) and expire as a whole (history_expire_v1): a
-- partition set past the retention window is dropped, after the few rows retention must keep are
-- moved into the ARCHIVE partition below every set (`<table>_archive`, from MINVALUE up to the
-- oldest set), whose upper bound then moves up over the dropped set. The archive stays small (only
-- what retention keeps) and is pruned row by row (history_prune_v1). However long runs live, each
-- table has one archive, the sets of the window, and its DEFAULT partition: hot-path statements
-- lock every partition of the tables they read (PostgreSQL 15), so their number must stay small.
-- Every function here is maintenance, never the hot path; each takes its locks under the caller's
-- lock_timeout and is retried on the next round when it cannot.
--
-- What retention keeps, whatever its age: a live run (queued or running) with its steps, attempts
-- and events; a run that ended less than the retention window ago (runs that outlive their
-- creation by more than an hour keep their live_runs row until then; every shorter one ended
-- within an hour of its set's end, which is why a set expires an hour after the window); a run an
-- open idempotency window names; an event in the runner's inbox, recorded by an open dedupe
-- window, or pinned by a run that still exists (event_pins). Events partitions expire one set
-- after the runs of the same bounds: a run is made from events of its own or the previous set,
-- or pins them.

-- pgqueue.history_columns_v1: the stored columns of a history table, quoted and comma-separated,
-- for copying rows between its partitions (a generated column is computed again, not copied).
CREATE OR REPLACE FUNCTION pgqueue.history_columns_v1(p_table text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
    FROM pg_attribute a
    WHERE a.attrelid = format('pgqueue.%I', p_table)::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = ''
$$;

-- pgqueue.history_partition_create_v2: history_partition_create_v1 (0017), and rows already in the
-- DEFAULT partitions for the new bounds (the maintenance stopped for longer than the partitions
-- made ahead) are moved into the new partitions first, in the same transaction.
CREATE OR REPLACE FUNCTION pgqueue.history_partition_create_v2(p_starts timestamptz, p_ends timestamptz)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suffix text := 'p' || to_char(p_starts AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
    v_lo text := pgqueue.ulid_bound_v1(p_starts);
    v_hi text := pgqueue.ulid_bound_v1(p_ends);
    v_table text;
    v_key text;
BEGIN
    IF EXISTS (SELECT 1 FROM pgqueue.history_partitions h WHERE h.suffix = v_suffix) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM pgqueue.history_partitions h WHERE h.lo < v_hi AND v_lo < h.hi) THEN
        RAISE EXCEPTION 'history partition % [%, %) overlaps an existing one', v_suffix, p_starts, p_ends;
    END IF;
    FOREACH v_table IN ARRAY ARRAY['events', 'runs', 'steps', 'attempts'] LOOP
        v_key := CASE WHEN v_table IN ('events', 'runs') THEN 'id' ELSE 'run_id' END;
        EXECUTE format('CREATE TABLE pgqueue.%I (LIKE pgqueue.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
                       v_table || '_' || v_suffix, v_table);
        EXECUTE format('ALTER TABLE pgqueue.%I SET (autovacuum_freeze_min_age = 0, fillfactor = %s)',
                       v_table || '_' || v_suffix, CASE v_table WHEN 'runs' THEN 85 ELSE 100 END);
        -- Rows that went to the DEFAULT partition for want of this one (attaching with them there
        -- would fail): moved under a lock on the default partition, so none arrives in between.
        EXECUTE format('LOCK TABLE pgqueue.%I IN ACCESS EXCLUSIVE MODE', v_table || '_default');
        EXECUTE format('WITH moved AS (DELETE FROM pgqueue.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                       'INSERT INTO pgqueue.%I (%s) SELECT %s FROM moved',
                       v_table || '_default', v_key, v_lo, v_key, v_hi, v_table || '_' || v_suffix,
                       pgqueue.history_columns_v1(v_table), pgqueue.history_columns_v1(v_table));
        EXECUTE format('ALTER TABLE pgqueue.%I ATTACH PARTITION pgqueue.%I FOR VALUES FROM (%L) TO (%L)',
                       v_table, v_table || '_' || v_suffix, v_lo, v_hi);
    END LOOP;
    INSERT INTO pgqueue.history_partitions (suffix, lo, hi, starts_at, ends_at)
    VALUES (v_suffix, v_lo, v_hi, p_starts, p_ends);
    RETURN v_suffix;
END
$$;

-- pgqueue.history_ensure_v1: partition sets of `p_width` from the last one (or the current one)
-- until `p_now + p_ahead`, aligned on multiples of the width since the epoch. Returns how many it
-- made. At most one set per call: each takes its own locks, and the rescuer calls again.
CREATE OR REPLACE FUNCTION pgqueue.history_ensure_v1(p_now timestamptz, p_width interval, p_ahead interval)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_next timestamptz;
BEGIN
    IF p_width < interval '1 hour' OR p_width > interval '31 days' THEN
        RAISE EXCEPTION 'history partition width % outside 1 hour .. 31 days', p_width;
    END IF;
    SELECT max(h.ends_at) INTO v_next FROM pgqueue.history_partitions h;
    IF v_next IS NULL THEN
        v_next := date_bin(p_width, p_now, timestamptz '1970-01-01 00:00:00+00');
    END IF;
    IF v_next >= p_now + p_ahead THEN
        RETURN 0;
    END IF;
    PERFORM pgqueue.history_partition_create_v2(v_next, v_next + p_width);
    RETURN 1;
END
$$;

-- pgqueue.history_partitions_due_v1: does history_ensure_v1 have anything to do? Read by the
-- rescuer on every round (an index-only look at a table of a few dozen rows).
CREATE OR REPLACE FUNCTION pgqueue.history_partitions_due_v1(p_now timestamptz, p_ahead interval)
RETURNS boolean
LANGUAGE plpgsql  -- not checked against the schema when created (the table comes with 0017)
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT coalesce(max(h.ends_at) < p_now + p_ahead, true) FROM pgqueue.history_partitions h);
END
$$;

-- pgqueue.history_merge_v1: merge the partition `<p_table>_<p_suffix>` [.., p_hi) into the archive
-- partition below it: its rows whose `p_key` column is in `p_keep` move into the archive, the
-- partition is dropped, and the archive's upper bound becomes p_hi. Rows of the DEFAULT partition
-- below p_hi (ids from a clock far behind) move into the archive too. The caller holds ACCESS
-- EXCLUSIVE on the parent. Returns the rows kept.
CREATE OR REPLACE FUNCTION pgqueue.history_merge_v1(
    p_table text, p_suffix text, p_key text, p_hi text, p_keep text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old text := p_table || '_' || p_suffix;
    v_archive text := p_table || '_archive';
    v_cols text := pgqueue.history_columns_v1(p_table);
    v_kept bigint := 0;
BEGIN
    IF p_table NOT IN ('events', 'runs', 'steps', 'attempts') THEN
        RAISE EXCEPTION 'not a history table: %', p_table;
    END IF;
    EXECUTE format('ALTER TABLE pgqueue.%I DETACH PARTITION pgqueue.%I', p_table, v_archive);
    IF to_regclass(format('pgqueue.%I', v_old)) IS NOT NULL THEN
        IF cardinality(p_keep) > 0 THEN
            EXECUTE format('INSERT INTO pgqueue.%I (%s) SELECT %s FROM pgqueue.%I WHERE %I = ANY ($1)',
                           v_archive, v_cols, v_cols, v_old, p_key) USING p_keep;
            GET DIAGNOSTICS v_kept = ROW_COUNT;
        END IF;
        EXECUTE format('ALTER TABLE pgqueue.%I DETACH PARTITION pgqueue.%I', p_table, v_old);
        EXECUTE format('DROP TABLE pgqueue.%I', v_old);
    END IF;
    EXECUTE format('WITH moved AS (DELETE FROM pgqueue.%I WHERE %I < %L RETURNING *) '
                   'INSERT INTO pgqueue.%I (%s) SELECT %s FROM moved',
                   p_table || '_default', p_key, p_hi, v_archive, v_cols, v_cols);
    EXECUTE format('ALTER TABLE pgqueue.%I ATTACH PARTITION pgqueue.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                   p_table, v_archive, p_hi);
    RETURN v_kept;
END
$$;

-- pgqueue.history_expire_v1: expire the oldest partition set that is past the window: its runs
-- (with their steps and attempts) once `ends_at + 1 hour <= p_now - p_retention`, its events one
-- set later, after the runs of the next set. One set's runs or events per call, in the caller's
-- transaction (which should set a lock_timeout: this takes ACCESS EXCLUSIVE on the parents for
-- the merge, milliseconds). Returns what it did, or no row when nothing is due.
CREATE OR REPLACE FUNCTION pgqueue.history_expire_v1(p_now timestamptz, p_retention interval)
RETURNS TABLE (suffix text, part text, kept bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- else custom plans of the partitioned history, made on every call
AS $$
DECLARE
    v_cutoff timestamptz := p_now - p_retention;
    h record;
    v_keep text[];
BEGIN
    -- Runs, steps and attempts of the oldest set past the window.
    SELECT * INTO h FROM pgqueue.history_partitions x
    WHERE x.runs_archived_at IS NULL AND x.ends_at + interval '1 hour' <= v_cutoff
    ORDER BY x.starts_at LIMIT 1;
    IF FOUND THEN
        LOCK TABLE pgqueue.runs, pgqueue.steps, pgqueue.attempts IN ACCESS EXCLUSIVE MODE;
        -- The runs kept (see the top of this file): few, listed in live_runs.
        SELECT coalesce(array_agg(k.id), '{}') INTO v_keep FROM (
            SELECT l.run_id AS id FROM pgqueue.live_runs l
            WHERE l.run_id >= h.lo AND l.run_id < h.hi AND (l.ended_at IS NULL OR l.ended_at >= v_cutoff)
            UNION
            SELECT ik.run_id FROM pgqueue.idempotency_keys ik
            WHERE ik.run_id >= h.lo AND ik.run_id < h.hi AND ik.expires_at > p_now
        ) k;
        suffix := h.suffix;
        part := 'runs';
        kept := pgqueue.history_merge_v1('runs', h.suffix, 'id', h.hi, v_keep);
        PERFORM pgqueue.history_merge_v1('steps', h.suffix, 'run_id', h.hi, v_keep);
        PERFORM pgqueue.history_merge_v1('attempts', h.suffix, 'run_id', h.hi, v_keep);
        UPDATE pgqueue.history_partitions x SET runs_archived_at = p_now WHERE x.suffix = h.suffix;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Events of the oldest set whose next set's runs have expired (or that has no next set).
    SELECT * INTO h FROM pgqueue.history_partitions x
    WHERE x.runs_archived_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM pgqueue.history_partitions n
                      WHERE n.starts_at = x.ends_at AND n.runs_archived_at IS NULL)
    ORDER BY x.starts_at LIMIT 1;
    IF FOUND THEN
        LOCK TABLE pgqueue.events IN ACCESS EXCLUSIVE MODE;
        suffix := h.suffix;
        part := 'events';
        SELECT coalesce(array_agg(DISTINCT k.id), '{}') INTO v_keep
        FROM pgqueue.history_kept_events_v1(h.lo, h.hi, p_now) k;
        kept := pgqueue.history_merge_v1('events', h.suffix, 'id', h.hi, v_keep);
        DELETE FROM pgqueue.history_partitions x WHERE x.suffix = h.suffix;
        RETURN NEXT;
        RETURN;
    END IF;
END
$$;

-- pgqueue.history_kept_events_v1: the events in [p_lo, p_hi) that retention keeps: an event of a
-- run in the archive (every run of a set is of a later set than these events, made from its own
-- or the previous set's events, or pins them), pinned by a run that exists, in the runner's
-- inbox, or recorded by an open dedupe window.
CREATE OR REPLACE FUNCTION pgqueue.history_kept_events_v1(p_lo text, p_hi text, p_now timestamptz)
RETURNS TABLE (id text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT DISTINCT e.eid::text FROM pgqueue.runs_archive r CROSS JOIN LATERAL unnest(r.event_ids) AS e(eid)
                 WHERE e.eid >= p_lo AND e.eid < p_hi;
    RETURN QUERY SELECT p.event_id::text FROM pgqueue.event_pins p
                 WHERE p.event_id >= p_lo AND p.event_id < p_hi
                   AND EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = p.run_id);
    RETURN QUERY SELECT i.event_id::text FROM pgqueue.event_inbox i WHERE i.event_id >= p_lo AND i.event_id < p_hi;
    RETURN QUERY SELECT d.event_id::text FROM pgqueue.event_dedupe d
                 WHERE d.event_id >= p_lo AND d.event_id < p_hi AND d.expires_at > p_now;
END
$$;

-- pgqueue.history_prune_v1: row by row, what retention no longer keeps in the archive partitions
-- (small: only what expiries kept) and in the DEFAULT partitions (rows whose ids are not ULIDs of
-- a covered time), at most p_limit runs and p_limit events per call; the pins of runs that are
-- gone; long runs' live_runs rows and run failures retention no longer keeps; counts older than
-- the window. Returns (runs, events) deleted.
CREATE OR REPLACE FUNCTION pgqueue.history_prune_v1(p_now timestamptz, p_retention interval, p_limit integer)
RETURNS TABLE (runs_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_cutoff timestamptz := p_now - p_retention;
    v_runs text[];
    n bigint;
BEGIN
    -- Runs that ended before the window and no open idempotency window names.
    v_runs := ARRAY(
        SELECT r.id::text FROM pgqueue.runs_archive r
        WHERE r.ended_at < v_cutoff
          AND NOT EXISTS (SELECT 1 FROM pgqueue.idempotency_keys k WHERE k.run_id = r.id AND k.expires_at > p_now)
        LIMIT p_limit FOR UPDATE SKIP LOCKED)
      || ARRAY(
        SELECT r.id::text FROM pgqueue.runs_default r
        WHERE r.ended_at < v_cutoff
          AND NOT EXISTS (SELECT 1 FROM pgqueue.idempotency_keys k WHERE k.run_id = r.id AND k.expires_at > p_now)
        LIMIT p_limit FOR UPDATE SKIP LOCKED);
    DELETE FROM pgqueue.steps s WHERE s.run_id = ANY (v_runs);
    DELETE FROM pgqueue.attempts a WHERE a.run_id = ANY (v_runs);
    DELETE FROM pgqueue.runs r WHERE r.id = ANY (v_runs);
    DELETE FROM pgqueue.event_pins p WHERE p.run_id = ANY (v_runs);
    DELETE FROM pgqueue.run_metadata m WHERE m.run_id = ANY (v_runs);
    runs_deleted := cardinality(v_runs);

    -- Events of the archive that nothing keeps any more.
    DELETE FROM pgqueue.events_archive e
    WHERE e.id IN (SELECT e1.id FROM pgqueue.events_archive e1
                   WHERE e1.id NOT IN (SELECT k.id FROM pgqueue.history_kept_events_v1(
                                           '', pgqueue.history_archive_hi_v1('events'), p_now) k)
                   LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT;
    events_deleted := n;
    -- Events of the default partition received before the window that nothing needs.
    DELETE FROM pgqueue.events_default e
    WHERE e.id IN (SELECT e1.id FROM pgqueue.events_default e1
                   WHERE e1.received_at < v_cutoff
                     AND NOT EXISTS (SELECT 1 FROM pgqueue.event_inbox i WHERE i.event_id = e1.id)
                     AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.event_id = e1.id)
                     AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r
                                     WHERE cardinality(r.event_ids) > 1 AND r.event_ids @> ARRAY[e1.id])
                     AND NOT EXISTS (SELECT 1 FROM pgqueue.event_pins p WHERE p.event_id = e1.id)
                     AND NOT EXISTS (SELECT 1 FROM pgqueue.event_dedupe d
                                     WHERE d.event_id = e1.id AND d.expires_at > p_now)
                   LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT;
    events_deleted := events_deleted + n;

    -- Metadata of runs whose set expired (few runs have any: a table of its own, pruned here).
    DELETE FROM pgqueue.run_metadata m
    WHERE (m.run_id, m.scope, m.step_id, m.attempt, m.span_id, m.kind) IN (
        SELECT m1.run_id, m1.scope, m1.step_id, m1.attempt, m1.span_id, m1.kind FROM pgqueue.run_metadata m1
        WHERE m1.run_id < pgqueue.history_archive_hi_v1('runs')
          AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = m1.run_id)
        LIMIT p_limit);
    -- Pins of runs that are gone (their set expired), runs' bookkeeping retention no longer keeps.
    DELETE FROM pgqueue.event_pins p
    WHERE p.ctid IN (SELECT p1.ctid FROM pgqueue.event_pins p1
                     WHERE NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = p1.run_id) LIMIT p_limit);
    DELETE FROM pgqueue.live_runs l
    WHERE l.run_id IN (SELECT l1.run_id FROM pgqueue.live_runs l1 WHERE l1.ended_at < v_cutoff LIMIT p_limit);
    DELETE FROM pgqueue.run_failures f
    WHERE f.run_id IN (SELECT f1.run_id FROM pgqueue.run_failures f1
                       WHERE f1.ended_at < v_cutoff AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = f1.run_id)
                       LIMIT p_limit);
    DELETE FROM pgqueue.run_counts c
    WHERE (c.minute, c.function_id, c.shard) IN (
        SELECT c1.minute, c1.function_id, c1.shard FROM pgqueue.run_counts c1
        WHERE c1.minute < v_cutoff LIMIT p_limit);
    RETURN NEXT;
END
$$;

-- pgqueue.history_archive_hi_v1: the upper bound of a table's archive partition.
CREATE OR REPLACE FUNCTION pgqueue.history_archive_hi_v1(p_table text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']*)''\)')
            FROM pg_class c WHERE c.oid = format('pgqueue.%I', p_table || '_archive')::regclass);
END
$$;

-- pgqueue.runs_ended_v1: the bookkeeping of runs that just ended, for the statement that ended them
-- (set-based: a group commit ends many at once): their live_runs rows go (a run that outlived its
-- creation by over an hour keeps its row, with ended_at, for retention), failures are listed in
-- run_failures, and the per-minute counts and duration histogram (run_counts) move. Arrays, one
-- element per run, because the caller's UPDATE ... RETURNING has the values and a function called
-- in the same statement would not see its rows yet.
CREATE OR REPLACE FUNCTION pgqueue.runs_ended_v1(
    p_ids text[], p_function_ids uuid[], p_statuses text[], p_created timestamptz[], p_ended timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM pgqueue.live_runs l
    USING unnest(p_ids, p_created, p_ended) AS x(id, created_at, ended_at)
    WHERE l.run_id = x.id AND x.ended_at - x.created_at <= interval '1 hour';
    UPDATE pgqueue.live_runs l SET ended_at = x.ended_at
    FROM unnest(p_ids, p_created, p_ended) AS x(id, created_at, ended_at)
    WHERE l.run_id = x.id AND x.ended_at - x.created_at > interval '1 hour';
    INSERT INTO pgqueue.run_failures AS f (run_id, function_id, ended_at)
    SELECT x.id, x.function_id, x.ended_at
    FROM unnest(p_ids, p_function_ids, p_statuses, p_ended) AS x(id, function_id, status, ended_at)
    WHERE x.status = 'failed'
    ON CONFLICT (run_id) DO UPDATE SET ended_at = EXCLUDED.ended_at;
    PERFORM pgqueue.run_counts_add_v1(p_function_ids, p_statuses, p_ended,
                                      ARRAY(SELECT extract(epoch FROM e - c) * 1000
                                            FROM unnest(p_created, p_ended) AS u(c, e)));
    RETURN cardinality(p_ids);
END
$$;

-- pgqueue.run_counts_add_v1: count runs made ('created', at their creation) or ended (completed |
-- failed | cancelled, at their end, with their duration in ms) into run_counts, one upsert per
-- minute and function. Duration bucket b (1..25) holds runs of [2^(b-2), 2^(b-1)) ms; the first
-- everything under 1 ms, the last everything from 2^23 ms (2.3 hours) on.
CREATE OR REPLACE FUNCTION pgqueue.run_counts_add_v1(
    p_function_ids uuid[], p_statuses text[], p_at timestamptz[], p_duration_ms double precision[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgqueue.run_counts AS c (minute, function_id, shard, created, completed, failed, cancelled, duration_ms)
    SELECT g.minute, g.function_id, (pg_backend_pid() % 8)::smallint, g.created, g.completed, g.failed, g.cancelled,
           -- the group's own durations, bucketed once per run: linear in the batch, whatever the functions
           ARRAY(SELECT count(b.bucket)::integer
                 FROM generate_series(1, 25) AS s(i)
                 LEFT JOIN unnest(g.buckets) AS b(bucket) ON b.bucket = s.i
                 GROUP BY s.i ORDER BY s.i)
    FROM (SELECT date_trunc('minute', u.at) AS minute, u.function_id,
                 count(*) FILTER (WHERE u.status = 'created')::integer AS created,
                 count(*) FILTER (WHERE u.status = 'completed')::integer AS completed,
                 count(*) FILTER (WHERE u.status = 'failed')::integer AS failed,
                 count(*) FILTER (WHERE u.status = 'cancelled')::integer AS cancelled,
                 array_agg(least(25, greatest(1, floor(ln(greatest(u.ms, 0.5)) / ln(2))::integer + 2)))
                     FILTER (WHERE u.ms IS NOT NULL) AS buckets
          FROM unnest(p_function_ids, p_statuses, p_at, p_duration_ms) AS u(function_id, status, at, ms)
          GROUP BY 1, 2) g
    -- Rows in one order for every writer: two transactions of backends on the same shard that add
    -- to the same functions' rows would otherwise lock them in hash order and could deadlock.
    ORDER BY g.minute, g.function_id
    ON CONFLICT (minute, function_id, shard) DO UPDATE
    SET created = c.created + EXCLUDED.created, completed = c.completed + EXCLUDED.completed,
        failed = c.failed + EXCLUDED.failed, cancelled = c.cancelled + EXCLUDED.cancelled,
        duration_ms = ARRAY(SELECT a + b FROM unnest(c.duration_ms, EXCLUDED.duration_ms) WITH ORDINALITY AS v(a, b, i)
                            ORDER BY v.i);
END
$$;

-- pgqueue.runs_reopened_v1: a run that ended is live again (retry_run).
CREATE OR REPLACE FUNCTION pgqueue.runs_reopened_v1(p_id text, p_function_id uuid, p_created timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgqueue.live_runs (run_id, function_id, created_at) VALUES (p_id, p_function_id, p_created)
    ON CONFLICT (run_id) DO UPDATE SET ended_at = NULL;
    DELETE FROM pgqueue.run_failures f WHERE f.run_id = p_id;
END
$$;

-- pgqueue.live_runs_reconcile_v1: drop the live_runs rows of runs that ended without their end
-- being recorded (an end path that missed runs_ended_v1): read by the rescuer once a minute, a
-- probe per live run. Such a row only made retention keep its run longer.
CREATE OR REPLACE FUNCTION pgqueue.live_runs_reconcile_v1(p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM pgqueue.live_runs l
    WHERE l.run_id IN (
        SELECT l1.run_id FROM pgqueue.live_runs l1
        WHERE l1.ended_at IS NULL AND l1.created_at < now() - interval '1 minute'
          AND NOT EXISTS (SELECT 1 FROM pgqueue.runs r WHERE r.id = l1.run_id AND r.ended_at IS NULL)
        LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- pgqueue.history_backfill_v1: partition sets of `p_width` for older history, from p_starts up to
-- the oldest set: the archive's upper bound moves down to p_starts first (the archive must hold no
-- row at or above it). For imports of older events and runs, and for tests that need old data in
-- sets of its own. Returns how many sets it made.
CREATE OR REPLACE FUNCTION pgqueue.history_backfill_v1(p_starts timestamptz, p_width interval)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_first timestamptz;
    v_bound text := pgqueue.ulid_bound_v1(p_starts);
    v_table text;
    v_key text;
    v_at timestamptz;
    v_made integer := 0;
    v_any boolean;
BEGIN
    SELECT min(h.starts_at) INTO v_first FROM pgqueue.history_partitions h;
    IF v_first IS NULL OR p_starts >= v_first THEN
        RETURN 0;
    END IF;
    LOCK TABLE pgqueue.events, pgqueue.runs, pgqueue.steps, pgqueue.attempts IN ACCESS EXCLUSIVE MODE;
    IF pgqueue.history_archive_hi_v1('runs') < pgqueue.ulid_bound_v1(v_first)
       OR pgqueue.history_archive_hi_v1('events') < pgqueue.ulid_bound_v1(v_first) THEN
        RAISE EXCEPTION 'history sets have expired: backfill goes below the oldest set ever made only';
    END IF;
    FOREACH v_table IN ARRAY ARRAY['events', 'runs', 'steps', 'attempts'] LOOP
        v_key := CASE WHEN v_table IN ('events', 'runs') THEN 'id' ELSE 'run_id' END;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM pgqueue.%I WHERE %I >= %L)', v_table || '_archive', v_key, v_bound)
            INTO v_any;
        IF v_any THEN
            RAISE EXCEPTION '%_archive holds rows at or after %: cannot backfill sets there', v_table, p_starts;
        END IF;
        EXECUTE format('ALTER TABLE pgqueue.%I DETACH PARTITION pgqueue.%I', v_table, v_table || '_archive');
        EXECUTE format('ALTER TABLE pgqueue.%I ATTACH PARTITION pgqueue.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                       v_table, v_table || '_archive', v_bound);
    END LOOP;
    v_at := p_starts;
    WHILE v_at < v_first LOOP
        PERFORM pgqueue.history_partition_create_v2(v_at, least(v_at + p_width, v_first));
        v_at := least(v_at + p_width, v_first);
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END
$$;
