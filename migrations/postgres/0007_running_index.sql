-- The sweeper looks for running jobs whose lease lapsed (`Store::abandoned_jobs`) every 15 s
-- in each API; without an index that read every job kept (30 days of them). A partial index
-- holds only the running ones, a handful. Its key is the id, which never changes: the lease
-- renewals (`updated_at`, several a minute per running job) leave the index alone, so they
-- stay HOT updates, where an index on `updated_at` would add an index entry at each.
CREATE INDEX jobs_running ON jobs (id) WHERE status = 'running';
