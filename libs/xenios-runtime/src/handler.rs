use async_nats::jetstream;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use xenios_contract::envelope::JobEvent;
use xenios_contract::subjects::events_subject;
use xenios_contract::{JobError, JobId, JobKind, Progress};
use xenios_store::Store;

/// What a handler's failure means for the job: try again later, or never.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("transient failure: {}: {}", .0.code, .0.message)]
    Transient(JobError),
    #[error("permanent failure: {}: {}", .0.code, .0.message)]
    Permanent(JobError),
}

impl HandlerError {
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Transient(JobError {
            code: code.into(),
            message: message.into(),
            retryable: true,
        })
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Permanent(JobError {
            code: code.into(),
            message: message.into(),
            retryable: false,
        })
    }

    pub fn job_error(&self) -> &JobError {
        match self {
            HandlerError::Transient(e) | HandlerError::Permanent(e) => e,
        }
    }
}

pub type HandlerResult = Result<Value, HandlerError>;

/// The logic of one job kind. The runtime enters a span with the job's id, kind, attempt and
/// correlation id before calling it, so handlers log plainly.
pub trait Handler: Send + Sync + 'static {
    fn kind(&self) -> JobKind;
    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult>;
}

/// One attempt of one job, as a handler sees it.
pub struct JobContext {
    pub job_id: JobId,
    pub kind: JobKind,
    pub user_id: Option<String>,
    pub input: Value,
    pub attempt: u32,
    pub correlation_id: String,
    /// Fired when the job is cancelled, times out, or the process must stop: return soon.
    pub cancel: CancellationToken,
    pub(crate) store: Store,
    pub(crate) nats: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
}

impl JobContext {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Records progress and tells the job's watchers. Best effort: a lost progress update
    /// never fails the job.
    pub async fn progress(&self, progress: Progress) {
        if let Err(e) = self.store.set_progress(self.job_id, &progress).await {
            tracing::warn!(error = %e, "cannot store progress");
        }
        self.publish(&JobEvent::Progress(progress)).await;
    }

    /// Streams a piece of output (LLM tokens) to the job's watchers as soon as it exists.
    pub async fn token(&self, text: &str) {
        self.publish(&JobEvent::token(text)).await;
    }

    /// Publishes without asking for the stream's acknowledgement (the subject is still
    /// captured by `JOB_EVENTS`): events of one job leave over one connection in order, and
    /// the terminal ones are confirmed by the runtime. An LLM stream's tokens would otherwise
    /// cost the broker an acknowledgement message each, for nobody to read.
    async fn publish(&self, event: &JobEvent) {
        if let Err(e) = self
            .nats
            .publish(events_subject(self.job_id), event.to_bytes())
            .await
        {
            tracing::warn!(error = %e, "cannot publish job event");
        }
    }
}
