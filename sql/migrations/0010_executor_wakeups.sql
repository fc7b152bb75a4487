-- 0010_executor_wakeups: serverless executors that do not lose kicks and wake in time.
-- scan_ended_at: when an executor last finished scanning (it then looks once more). A kick is
-- skipped only while the last kicked executor has not finished scanning yet: it will see the
-- events; otherwise the events may have arrived after its last look, and a new kick goes out.
-- lingerer/lingering_until: the one executor that stays up for work due within a minute.
ALTER TABLE pgqueue.executor_kicks
    ADD COLUMN scan_ended_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN lingerer uuid,
    ADD COLUMN lingering_until timestamptz NOT NULL DEFAULT '-infinity';
