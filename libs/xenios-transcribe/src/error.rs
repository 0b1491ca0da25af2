use std::time::Duration;

/// Why a transcription failed, in the terms of the `transcription` job (SPEC §3):
/// [`TranscribeError::code`] is the job error's `code`, [`TranscribeError::retryable`] whether
/// the job should be tried again later (after [`TranscribeError::retry_after`] when the
/// provider said so).
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("unsupported audio format: {0}")]
    UnsupportedFormat(String),
    #[error("the audio lasts {duration_s:.1} s, more than the limit of {limit_s} s")]
    TooLong { duration_s: f64, limit_s: f64 },
    /// The duration is unknown from the headers, and the file is larger than any audio of
    /// the allowed duration would be.
    #[error("the audio ({bytes} bytes) is too large for the duration limit of {limit_s} s")]
    TooLarge { bytes: usize, limit_s: f64 },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The provider refused, failed, or answered something unreadable.
    #[error("{provider} failed: {message}")]
    Provider {
        provider: &'static str,
        status: Option<u16>,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    #[error("{provider} did not answer within {} s", .after.as_secs_f64())]
    Timeout {
        provider: &'static str,
        after: Duration,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("transcription configuration: {0}")]
    Config(String),
}

impl TranscribeError {
    /// Stable: `unsupported_format`, `too_long`, `invalid_input`, `provider_error`, `timeout`,
    /// `cancelled`, `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            TranscribeError::UnsupportedFormat(_) => "unsupported_format",
            TranscribeError::TooLong { .. } | TranscribeError::TooLarge { .. } => "too_long",
            TranscribeError::InvalidInput(_) => "invalid_input",
            TranscribeError::Provider { .. } => "provider_error",
            TranscribeError::Timeout { .. } => "timeout",
            TranscribeError::Cancelled => "cancelled",
            TranscribeError::Config(_) => "internal",
        }
    }

    /// 408, 429, 5xx, broken connections, unreadable answers and timeouts are transient;
    /// everything about the input, and other provider refusals, is not.
    pub fn retryable(&self) -> bool {
        match self {
            TranscribeError::Provider { retryable, .. } => *retryable,
            TranscribeError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// How long the provider asked to wait before the next try (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TranscribeError::Provider { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
