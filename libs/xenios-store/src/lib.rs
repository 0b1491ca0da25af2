//! The system of record: jobs, the LLM audit trail (`inference_logs`) and the extraction cache,
//! behind one `Store` handle over PostgreSQL (production, schema `ai_backend` of the shared
//! database) or SQLite (embedded default). Migrations are embedded from `migrations/`.

mod conns;
mod db;
mod error;
mod model;
mod pg_batch;
mod sqlite_lock;
mod sqlite_writer;
mod store;

pub use error::StoreError;
pub use model::{
    AttemptWrite, Backend, CancelOutcome, Created, InferenceLog, JobPage, JobQuery, JobRecord,
    ModelUsage, NewJob, Outcome, SqliteSync, StartAttempt, StoreOptions, UsageCounts, UsageQuery,
    UsageReport, UserJob, UserUsage, WebhookDue, WebhookStatus, PAGE_BYTES,
};
pub use store::{Result, Store, ERASED, PG_SCHEMA, USAGE_TOP_USERS};
