-- 0015_durable_endpoints: runs started by the app's own HTTP handler (JS SDK durable endpoints,
-- POST /v1/checkpoint; pgqueue/executor/endpoint.py).
--
-- Why: such a run is called back at the URL and with the method of the request that started it
-- (its path may carry ids, so it is the run's, not the function's), once it leaves the request
-- (a step failed, a sleep, a wait) or the request died. NULL for every other run: those are
-- called at their function's URL with POST.
ALTER TABLE pgqueue.runs
    ADD COLUMN endpoint_url text,
    ADD COLUMN endpoint_method text;
