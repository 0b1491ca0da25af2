-- The same tables as migrations/postgres. STRICT tables reject values of the wrong type.
-- uuids are lowercase hyphenated TEXT (their byte order is time order for UUIDv7), JSON is TEXT,
-- timestamps are fixed-width RFC 3339 UTC TEXT with microseconds, so text order is time order.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    user_id          TEXT,
    input            TEXT NOT NULL,
    progress         TEXT,
    result           TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    correlation_id   TEXT NOT NULL,
    idempotency_key  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    published_at     TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    updated_at       TEXT NOT NULL
) STRICT;

-- Callers without a user (API key only) share the '' namespace for idempotency keys.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (coalesce(user_id, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_user_newest ON jobs (user_id, id DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at);

CREATE TABLE inference_logs (
    id            TEXT PRIMARY KEY NOT NULL,
    created_at    TEXT NOT NULL,
    user_id       TEXT,
    -- No foreign key: the audit trail outlives any cleanup of jobs.
    job_id        TEXT,
    task          TEXT NOT NULL,
    model         TEXT NOT NULL,
    provider      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    ttft_ms       INTEGER,
    cost_usd      REAL,
    success       INTEGER NOT NULL,
    error         TEXT
) STRICT;

CREATE INDEX inference_logs_job ON inference_logs (job_id);
CREATE INDEX inference_logs_created ON inference_logs (created_at);

CREATE TABLE extraction_cache (
    cache_key    TEXT PRIMARY KEY NOT NULL,
    sha256       TEXT NOT NULL,
    result       TEXT NOT NULL,
    hits         INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL
) STRICT;

CREATE INDEX extraction_cache_sha256 ON extraction_cache (sha256);
