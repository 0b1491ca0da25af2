use std::time::Duration;

/// Why a request failed, in the terms of the `llm` job (SPEC §3): [`LlmError::code`] is the job
/// error's `code`, [`LlmError::retryable`] whether the job should be tried again later.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request is wrong: unknown task, no messages, options out of range, a bad
    /// `response_format`.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A provider refused the request itself (HTTP 400, 413, 422, …); no other candidate is
    /// asked, since they would refuse it too.
    #[error("{provider} rejected the request for {model} (HTTP {status}): {message}")]
    Rejected {
        provider: String,
        model: String,
        status: u16,
        message: String,
    },
    #[error("{provider} failed for {model}: {message}")]
    Provider {
        provider: String,
        model: String,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    #[error("{provider} timed out for {model}: {message}")]
    Timeout {
        provider: String,
        model: String,
        message: String,
    },
    /// A streamed answer broke after text had reached the caller. Not retryable: a new try
    /// would send the caller the beginning again.
    #[error("{provider} broke off the answer of {model}: {message}")]
    Interrupted {
        provider: String,
        model: String,
        message: String,
    },
    /// Every candidate failed; `last` is the last failure, `summary` names them all.
    #[error("every candidate of task `{task}` failed: {summary}")]
    Exhausted {
        task: String,
        summary: String,
        retryable: bool,
        last: Box<LlmError>,
    },
    /// The answer did not match the requested JSON schema, feedback included.
    #[error("the answer does not match the response format after {tries} tries: {message}")]
    SchemaValidation {
        tries: u32,
        message: String,
        content: String,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("LLM configuration: {0}")]
    Config(String),
}

impl LlmError {
    /// Stable: `invalid_input`, `provider_error`, `timeout`, `cancelled`,
    /// `schema_validation_failed`, `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::InvalidInput(_) | LlmError::Rejected { .. } => "invalid_input",
            LlmError::Provider { .. } | LlmError::Interrupted { .. } => "provider_error",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Exhausted { last, .. } => last.code(),
            LlmError::SchemaValidation { .. } => "schema_validation_failed",
            LlmError::Cancelled => "cancelled",
            LlmError::Config(_) => "internal",
        }
    }

    /// Whether the same request may succeed later (the job is retried with a delay).
    pub fn retryable(&self) -> bool {
        match self {
            LlmError::Provider { retryable, .. } | LlmError::Exhausted { retryable, .. } => {
                *retryable
            }
            LlmError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// How long a provider asked to wait (a `Retry-After` longer than the configured cap).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Provider { retry_after, .. } => *retry_after,
            LlmError::Exhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }
}
