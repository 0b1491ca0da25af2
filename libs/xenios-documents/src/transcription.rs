//! The `transcription` kind: audio to a normalised transcript through the configured
//! provider (Deepgram or an OpenAI-compatible endpoint).

use futures::future::BoxFuture;
use xenios_config::Settings;
use xenios_contract::inputs::parse_transcription;
use xenios_contract::{JobKind, Progress};
use xenios_runtime::{Handler, HandlerError, HandlerResult, JobContext};
use xenios_transcribe::{TranscribeError, TranscribeOptions, Transcriber};

use crate::{stage, DocumentsError, Loader};

/// Serves `jobs.transcription`.
pub struct TranscriptionHandler {
    loader: Loader,
    /// Why there is no transcriber, when a process serving every kind starts without a
    /// provider: its transcription jobs fail saying so, rather than wait in the queue.
    transcriber: Result<Transcriber, String>,
    /// The kind's soft limit: no provider call outlives the attempt.
    settings_timeout: std::time::Duration,
}

impl TranscriptionHandler {
    /// Fails when no transcription provider is configured.
    pub fn new(settings: &Settings) -> Result<Self, DocumentsError> {
        let handler = Self::lenient(settings)?;
        if let Err(reason) = &handler.transcriber {
            return Err(TranscribeError::Config(reason.clone()).into());
        }
        Ok(handler)
    }

    /// Starts without a provider too; each job then fails with `unavailable`.
    pub fn lenient(settings: &Settings) -> Result<Self, DocumentsError> {
        let timeout = settings.jobs.transcription.soft_limit();
        Ok(TranscriptionHandler {
            loader: Loader::new(settings)?,
            transcriber: Transcriber::new(&settings.providers)
                .map(|t| t.with_timeout(timeout))
                .map_err(|e| e.to_string()),
            settings_timeout: timeout,
        })
    }

    /// Whether a provider is configured.
    pub fn is_configured(&self) -> bool {
        self.transcriber.is_ok()
    }
}

impl Handler for TranscriptionHandler {
    fn kind(&self) -> JobKind {
        JobKind::Transcription
    }

    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult> {
        Box::pin(async move {
            let transcriber = self
                .transcriber
                .as_ref()
                .map_err(|reason| HandlerError::permanent("unavailable", reason.clone()))?;
            let input = parse_transcription(&job.input)
                .map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
            job.progress(stage(0.0, "loading")).await;
            // A download may take up to `fetch.timeout_secs`: a cancelled or timed-out job
            // does not wait for it.
            let loaded = tokio::select! {
                loaded = self.loader.load(&job, input.file_id.as_deref(), input.url.as_deref()) => loaded?,
                _ = job.cancel.cancelled() => {
                    return Err(HandlerError::transient("cancelled", "the transcription was stopped"))
                }
            };
            job.progress(Progress {
                percent: Some(20.0),
                stage: Some("transcribing".into()),
                message: Some(format!(
                    "{} bytes sent to {} (up to {} s)",
                    loaded.bytes.len(),
                    transcriber.provider(),
                    self.settings_timeout.as_secs()
                )),
            })
            .await;
            let options = TranscribeOptions {
                language: input.language,
                diarize: input.diarize,
                max_duration_s: None,
            };
            let transcript = transcriber
                .transcribe(loaded.bytes, options, job.cancel.clone())
                .await
                .map_err(failure)?;
            serde_json::to_value(transcript)
                .map_err(|e| HandlerError::permanent("internal", e.to_string()))
        })
    }
}

/// The job's failure as the runtime takes it; a provider's `Retry-After` holds the next try
/// back, since one within it would only be refused again.
fn failure(e: TranscribeError) -> HandlerError {
    let message = e.to_string();
    match e {
        // The runtime knows why it interrupted the job and decides on its own.
        TranscribeError::Cancelled => HandlerError::transient("cancelled", message),
        e if e.retryable() => {
            HandlerError::transient(e.code(), message).with_retry_after(e.retry_after())
        }
        e => HandlerError::permanent(e.code(), message),
    }
}
