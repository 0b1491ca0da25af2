use std::time::Duration;

use async_nats::jetstream;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use xenios_contract::envelope::JobEvent;
use xenios_contract::subjects::events_subject;
use xenios_contract::tools::ToolCallDelta;
use xenios_contract::{JobError, JobId, JobKind, Progress};
use xenios_store::{AttemptWrite, Store};

/// What a handler's failure means for the job: try again later, or never.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("transient failure: {}: {}", error.code, error.message)]
    Transient {
        error: JobError,
        /// How long the next try should wait at least, when the failure says (a provider's
        /// `Retry-After`); the runtime's own backoff otherwise.
        retry_after: Option<Duration>,
    },
    #[error("permanent failure: {}: {}", .0.code, .0.message)]
    Permanent(JobError),
}

impl HandlerError {
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Transient {
            error: JobError {
                code: code.into(),
                message: message.into(),
                retryable: true,
            },
            retry_after: None,
        }
    }

    /// A transient failure whose next try should wait at least `wait`; a permanent one is
    /// left as it is.
    pub fn with_retry_after(self, wait: Option<Duration>) -> Self {
        match self {
            HandlerError::Transient { error, .. } => HandlerError::Transient {
                error,
                retry_after: wait,
            },
            permanent => permanent,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HandlerError::Transient { retry_after, .. } => *retry_after,
            HandlerError::Permanent(_) => None,
        }
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
            HandlerError::Transient { error, .. } | HandlerError::Permanent(error) => error,
        }
    }
}

pub type HandlerResult = Result<Value, HandlerError>;

/// The logic of one job kind. The runtime enters a span with the job's id, kind, attempt and
/// correlation id before calling it, so handlers log plainly.
pub trait Handler: Send + Sync + 'static {
    fn kind(&self) -> JobKind;
    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult>;

    /// Whether a first delivery's work may begin while its attempt is still being recorded.
    /// For handlers whose first output waits on a slow outside call (an LLM's first token):
    /// the call and the store write overlap. The job's events and progress wait for the
    /// record; if the job turns out not to be this consumer's to run (cancelled while queued,
    /// held by another consumer), the work is cancelled through `JobContext::cancel` and its
    /// events never go out.
    fn starts_before_recorded(&self) -> bool {
        false
    }
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
    pub(crate) admission: Admission,
}

/// When a job's events may go out: at once, or (an early start) once its attempt is recorded.
pub(crate) struct Admission(Option<watch::Receiver<bool>>);

impl Admission {
    pub(crate) fn open() -> Self {
        Admission(None)
    }

    pub(crate) fn after(recorded: watch::Receiver<bool>) -> Self {
        Admission(Some(recorded))
    }

    /// Waits until the attempt is recorded; `false` if it never will be.
    async fn admitted(&self) -> bool {
        match &self.0 {
            None => true,
            Some(recorded) if *recorded.borrow() => true,
            // `wait_for` looks at the current value first: one sent before the sender went
            // still counts.
            Some(recorded) => recorded.clone().wait_for(|open| *open).await.is_ok(),
        }
    }
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
        if !self.admission.admitted().await {
            return;
        }
        match self
            .store
            .set_progress(self.job_id, self.attempt, &progress)
            .await
        {
            Ok(AttemptWrite::Done(())) => {}
            // Another attempt holds the job; the runtime stops this one at its next renewal.
            Ok(AttemptWrite::Lost) => return,
            Err(e) => tracing::warn!(error = %e, "cannot store progress"),
        }
        self.publish(&JobEvent::Progress(progress)).await;
    }

    /// Streams a piece of output (LLM tokens) to the job's watchers as soon as it exists.
    pub async fn token(&self, text: &str) {
        self.publish(&JobEvent::token(text)).await;
    }

    /// A piece of a tool call the model is making, as a `token` event.
    pub async fn tool_call_delta(&self, delta: ToolCallDelta) {
        self.publish(&JobEvent::tool_call_delta(delta)).await;
    }

    /// Publishes without asking for the stream's acknowledgement (the subject is still
    /// captured by `JOB_EVENTS`): events of one job leave over one connection in order, and
    /// the terminal ones are confirmed by the runtime. An LLM stream's tokens would otherwise
    /// cost the broker an acknowledgement message each, for nobody to read.
    async fn publish(&self, event: &JobEvent) {
        if !self.admission.admitted().await {
            return;
        }
        if let Err(e) = self
            .nats
            .publish(events_subject(self.job_id), event.to_bytes())
            .await
        {
            tracing::warn!(error = %e, "cannot publish job event");
        }
    }
}
