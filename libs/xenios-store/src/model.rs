use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use xenios_contract::{JobError, JobId, JobKind, JobStatus, Progress};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// Bounds waiting for a pooled connection, and `ping`.
    pub acquire_timeout: Duration,
    /// PostgreSQL: the server cancels a statement that runs longer (`statement_timeout`), and
    /// the store gives up on one whose answer has not come shortly after (its connection dead
    /// without a reset, as after a failover), closing that connection. Either way its callers
    /// hear the database is unavailable. Zero: no limit. Migrations have none.
    pub statement_timeout: Duration,
    /// SQLite: when a commit reaches the disk (see [`SqliteSync`]).
    pub sqlite_sync: SqliteSync,
}

/// When a SQLite commit is made durable (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// Every commit is synced before it is answered: a job answered `202`, or an outcome
    /// acknowledged to the broker, survives a power loss or an OS crash.
    #[default]
    Full,
    /// Commits are synced at checkpoints: they survive the process crashing, but the last
    /// ones can be lost with the machine.
    Normal,
}

impl SqliteSync {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            // Far beyond any statement of the service (rows are written one job at a time,
            // deleted in batches of 200, listed in pages of 100): a failure detector, not a
            // budget. A batch of job writes holds up the process's next ones, and without a
            // bound a dead connection held them for the kernel's TCP timeout (~15 minutes).
            statement_timeout: Duration::from_secs(30),
            sqlite_sync: SqliteSync::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub kind: JobKind,
    /// None for callers authenticated by API key only.
    pub user_id: Option<String>,
    pub input: Value,
    pub correlation_id: String,
    /// Unique per user (callers without a user share one namespace).
    pub idempotency_key: Option<String>,
    /// Where the job is announced once finished (see [`crate::Store::claim_webhooks`]).
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub user_id: Option<String>,
    pub input: Value,
    pub progress: Option<Progress>,
    pub result: Option<Value>,
    /// The final error of a failed job, or the last transient error of a retried one.
    pub error: Option<JobError>,
    pub attempts: i32,
    pub correlation_id: String,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Where the job's announcement at its `webhook_url` stands; `None` without one.
    pub webhook: Option<WebhookStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(JobRecord),
    /// The same user already submitted this idempotency key: this is that job, unchanged.
    Existing(JobRecord),
}

impl JobRecord {
    /// The command that asks a consumer to run this job, as the API and the sweeper publish it.
    pub fn command(&self) -> xenios_contract::JobCommand {
        xenios_contract::JobCommand {
            job_id: self.id,
            kind: self.kind,
            user_id: self.user_id.clone(),
            input: self.input.clone(),
            submitted_at: self.created_at,
        }
    }
}

impl Created {
    pub fn job(&self) -> &JobRecord {
        match self {
            Created::New(j) | Created::Existing(j) => j,
        }
    }

    pub fn into_job(self) -> JobRecord {
        match self {
            Created::New(j) | Created::Existing(j) => j,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobQuery {
    /// None lists every user's jobs (service role).
    pub user_id: Option<String>,
    pub kind: Option<JobKind>,
    pub status: Option<JobStatus>,
    /// Clamped to 1..=100.
    pub limit: u32,
    /// Only jobs older than this one: the previous page's `next_cursor`.
    pub before: Option<JobId>,
    /// The page ends before the job that would take its inputs and results past this many
    /// bytes (as stored: on PostgreSQL, compressed), so `limit` jobs with results of tens of
    /// megabytes each are not all held at once. The first job is listed whatever its size.
    pub max_bytes: u64,
}

/// The default [`JobQuery::max_bytes`].
pub const PAGE_BYTES: u64 = 8 * 1024 * 1024;

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            user_id: None,
            kind: None,
            status: None,
            limit: 20,
            before: None,
            max_bytes: PAGE_BYTES,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Some only when more jobs match after this page.
    pub next_cursor: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StartAttempt {
    /// The job was queued, or running (a redelivery after a crashed attempt): it is now
    /// running with `attempts` counted up.
    Started(JobRecord),
    /// The job already has its outcome: ack the command and skip it.
    Finished(JobRecord),
    /// Cancellation was requested before this attempt could start: record `Outcome::Cancelled`.
    CancelRequested(JobRecord),
    /// Another holder is running the job and renewed its lease recently: offer this delivery
    /// again later.
    Busy(JobRecord),
    NotFound,
}

/// What a write made for one attempt of a job found. Every write of a consumer's attempt names
/// the attempt (its `attempts` count when it started), so one that was cut off from the
/// database past its lease cannot renew, requeue or finish the attempt that took the job over.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum AttemptWrite<T> {
    /// The attempt holds the job: written, with what the write returned.
    Done(T),
    /// It no longer does, and nothing was written: the job was taken over by a later attempt,
    /// put back or failed by the sweeper, or finished. The attempt must stop and record
    /// nothing; whoever holds the job now records its outcome.
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(JobError),
    Cancelled,
}

impl Outcome {
    pub fn status(&self) -> JobStatus {
        match self {
            Outcome::Succeeded(_) => JobStatus::Succeeded,
            Outcome::Failed(_) => JobStatus::Failed,
            Outcome::Cancelled => JobStatus::Cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// It was queued and will never start.
    Cancelled(JobRecord),
    /// It is running: `cancel_requested` is set and the consumer must interrupt it.
    Requested(JobRecord),
    AlreadyFinished(JobRecord),
    NotFound,
}

/// One provider call, successful or not (SPEC §3, LLM gateway).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceLog {
    pub id: uuid::Uuid,
    pub created_at: DateTime<Utc>,
    pub user_id: Option<String>,
    pub job_id: Option<JobId>,
    pub task: String,
    pub model: String,
    pub provider: String,
    /// Which try against this model, from 1.
    pub attempt: i32,
    /// Every input token billed; the two cache counts are parts of it.
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub cost_usd: Option<f64>,
    pub success: bool,
    pub error: Option<String>,
}

/// Which provider calls [`crate::Store::llm_usage`] sums: those made in `[since, until)`, of one
/// user or (`None`) of everyone, service calls included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub user_id: Option<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Provider calls summed (rows of `inference_logs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageCounts {
    /// LLM requests (jobs) the calls served.
    pub requests: i64,
    /// Every try, retries, fallbacks and JSON-schema re-asks included.
    pub calls: i64,
    pub failed_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// Of the calls with a known cost.
    pub cost_usd: f64,
}

/// One task and model's share of a [`UsageReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsage {
    pub task: String,
    pub model: String,
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// One user's share of an every-user [`UsageReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserUsage {
    /// `None`: calls made without a user (service calls).
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub counts: UsageCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageReport {
    pub total: UsageCounts,
    /// Costliest first.
    pub by_model: Vec<ModelUsage>,
    /// When the query is every user's: the costliest users first, at most
    /// [`crate::USAGE_TOP_USERS`].
    pub by_user: Vec<UserUsage>,
}

/// One of a user's jobs, as erasing the user's data needs it: no input or result.
#[derive(Debug, Clone, PartialEq)]
pub struct UserJob {
    pub id: JobId,
    pub status: JobStatus,
    pub updated_at: DateTime<Utc>,
    /// The `sha256` of the document an extraction (or transcription) read, from its result:
    /// the key of what the extraction cache holds of it.
    pub document_sha256: Option<String>,
}

/// A finished job's announcement, claimed for one try.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDue {
    pub job: JobRecord,
    pub url: String,
    /// This try's number, from 1.
    pub attempt: i32,
}

/// Where a job's announcement stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookStatus {
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub next_at: Option<DateTime<Utc>>,
    /// Why the last try failed.
    pub error: Option<String>,
}
