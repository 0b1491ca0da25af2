/// Why a document yielded no text. [`code`](ExtractError::code) is the stable name the
/// extraction job reports as its error code; the message says what was wrong with this
/// document and never echoes its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not a format this library reads (or not one it recognised from the bytes).
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// The bytes claim a supported format but cannot be read as it.
    #[error("corrupt document: {0}")]
    Corrupt(String),
    /// A size, page, compression-ratio or output limit was reached.
    #[error("document too large: {0}")]
    TooLarge(String),
    /// A document with no text layer, a scanned PDF or an image: it needs OCR
    /// (docling-serve). The message says which.
    #[error("{0}; it needs OCR")]
    OcrRequired(String),
    /// The deadline passed before the extraction finished.
    #[error("extraction did not finish before its deadline")]
    Timeout,
    /// Told to stop ([`crate::ExtractOptions::stop`]): the job was cancelled or its consumer
    /// is stopping.
    #[error("extraction stopped before it finished")]
    Stopped,
    /// docling-serve could not be reached or did not answer usefully.
    #[error("docling-serve unavailable: {0}")]
    Unavailable(String),
}

impl ExtractError {
    /// The stable error code: `unsupported_format`, `corrupt_document`, `too_large`,
    /// `ocr_required`, `timeout`, `stopped` or `unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::UnsupportedFormat(_) => "unsupported_format",
            ExtractError::Corrupt(_) => "corrupt_document",
            ExtractError::TooLarge(_) => "too_large",
            ExtractError::OcrRequired(_) => "ocr_required",
            ExtractError::Timeout => "timeout",
            ExtractError::Stopped => "stopped",
            ExtractError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether trying the same input again later may succeed: after a docling-serve outage,
    /// or an extraction stopped from outside. Every other failure is a property of the
    /// document and the limits.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExtractError::Unavailable(_) | ExtractError::Stopped)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        ExtractError::Corrupt(message.into())
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        ExtractError::TooLarge(message.into())
    }
}
