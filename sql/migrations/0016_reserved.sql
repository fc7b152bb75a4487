-- 0016_reserved: a placeholder holding number 16 for the branch that owns it.
--
-- Why: this branch's migration is 0017, and migrations must be numbered without gaps. When the
-- branch that owns 0016 lands, this file is deleted (it changes nothing, so a database that ran it
-- only records version 16 under this name).
SELECT 1;
