-- The sweeper only ever looks for queued jobs. A partial index holds just those, so the
-- running → finished update of every job no longer rewrites an index entry (on SQLite that
-- is whole index pages written to the WAL at each commit).
DROP INDEX IF EXISTS jobs_status_created;
CREATE INDEX jobs_queued_created ON jobs (created_at) WHERE status = 'queued';
