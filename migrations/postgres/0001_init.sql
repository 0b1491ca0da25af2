-- Runs with search_path = ai_backend (the store sets it on every connection and creates the
-- schema first): the Supabase database is shared and this service owns only that schema.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    user_id          text,
    input            jsonb NOT NULL,
    progress         jsonb,
    result           jsonb,
    error            jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    correlation_id   text NOT NULL,
    idempotency_key  text,
    cancel_requested boolean NOT NULL DEFAULT false,
    published_at     timestamptz,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL
);

-- Callers without a user (API key only) share the '' namespace for idempotency keys.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs ((coalesce(user_id, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_user_newest ON jobs (user_id, id DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at);

CREATE TABLE inference_logs (
    id            uuid PRIMARY KEY,
    created_at    timestamptz NOT NULL,
    user_id       text,
    -- No foreign key: the audit trail outlives any cleanup of jobs.
    job_id        uuid,
    task          text NOT NULL,
    model         text NOT NULL,
    provider      text NOT NULL,
    attempt       integer NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    latency_ms    bigint NOT NULL,
    ttft_ms       bigint,
    cost_usd      double precision,
    success       boolean NOT NULL,
    error         text
);

CREATE INDEX inference_logs_job ON inference_logs (job_id);
CREATE INDEX inference_logs_created ON inference_logs (created_at);

CREATE TABLE extraction_cache (
    cache_key    text PRIMARY KEY,
    sha256       text NOT NULL,
    result       jsonb NOT NULL,
    hits         bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL
);

CREATE INDEX extraction_cache_sha256 ON extraction_cache (sha256);
