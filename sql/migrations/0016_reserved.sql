-- 0016_reserved: a placeholder, so that this branch's migration 0019_realtime keeps the numbering
-- without gaps that pgqueue/db/migrate.py requires.
--
-- Why: migrations 0016-0018 belong to other branches of the same round. Delete this file when the
-- branch that owns 0016 lands (its own 0016_<topic>.sql takes the number).
SELECT 1;
