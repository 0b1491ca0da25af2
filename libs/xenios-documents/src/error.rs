use xenios_extract::ExtractError;
use xenios_fetch::FetchError;
use xenios_transcribe::TranscribeError;

/// Why a handler could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum DocumentsError {
    #[error("url inputs: {0}")]
    Fetch(#[from] FetchError),
    #[error("providers.docling_url: {0}")]
    Docling(#[from] ExtractError),
    #[error("{0}")]
    Transcription(#[from] TranscribeError),
}
