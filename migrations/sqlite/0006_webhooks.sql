-- A job may ask to be announced at a URL when it finishes (`webhook_url`). The delivery's
-- state: pending until the receiver answers 2xx (delivered) or the tries run out (failed);
-- NULL for a job without a webhook. `webhook_next_at` is when the next try is due (NULL: as
-- soon as the job is finished), and, while a try runs, the end of its lease.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_state TEXT;
ALTER TABLE jobs ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN webhook_next_at TEXT;
ALTER TABLE jobs ADD COLUMN webhook_error TEXT;

-- Only pending deliveries are indexed: jobs without a webhook cost the index nothing.
CREATE INDEX jobs_webhook_pending ON jobs (webhook_next_at) WHERE webhook_state = 'pending';
