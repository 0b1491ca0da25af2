//! The `extraction` kind: text out of a document, cached by its sha256 and the options.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xenios_config::Settings;
use xenios_contract::inputs::{parse_extraction, OutputFormat as InputOutput};
use xenios_contract::JobKind;
use xenios_extract::{extract, DoclingClient, ExtractError, ExtractOptions, OutputFormat};
use xenios_runtime::{Handler, HandlerError, HandlerResult, JobContext};

use crate::{stage, DocumentsError, Loader};

/// Bumped when the extractors' output changes, so old cache entries stop matching.
const EXTRACTOR_VERSION: &str = "1";

/// Serves `jobs.extraction`.
pub struct ExtractionHandler {
    loader: Loader,
    docling: Option<DoclingClient>,
    /// The most one extraction may take: the kind's soft limit, after which the runtime
    /// gives up on the attempt anyway.
    budget: Duration,
}

impl ExtractionHandler {
    pub fn new(settings: &Settings) -> Result<Self, DocumentsError> {
        let budget = settings.jobs.extraction.soft_limit();
        let docling = match settings
            .providers
            .docling_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            Some(url) => Some(DoclingClient::new(url, budget)?),
            None => None,
        };
        Ok(ExtractionHandler {
            loader: Loader::new(settings)?,
            docling,
            budget,
        })
    }
}

/// The `extraction_cache` key of a document's bytes (hex sha256) extracted to `output`.
pub fn cache_key(sha256: &str, output: OutputFormat) -> String {
    let output = match output {
        OutputFormat::Markdown => "markdown",
        OutputFormat::Text => "text",
    };
    format!("extract-v{EXTRACTOR_VERSION}:{sha256}:{output}")
}

impl Handler for ExtractionHandler {
    fn kind(&self) -> JobKind {
        JobKind::Extraction
    }

    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult> {
        Box::pin(async move {
            let input = parse_extraction(&job.input)
                .map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
            let output = match input.output {
                InputOutput::Markdown => OutputFormat::Markdown,
                InputOutput::Text => OutputFormat::Text,
            };
            job.progress(stage(0.0, "loading")).await;
            let loaded = tokio::select! {
                loaded = self.loader.load(&job, input.file_id.as_deref(), input.url.as_deref()) => loaded?,
                _ = job.cancel.cancelled() => return Err(stopped()),
            };
            let sha256 = hex::encode(Sha256::digest(&loaded.bytes));
            let key = cache_key(&sha256, output);

            match job.store().cached_extraction(&key).await {
                Ok(Some(Value::Object(mut hit))) => {
                    hit.insert("sha256".into(), sha256.into());
                    hit.insert("cached".into(), true.into());
                    return Ok(Value::Object(hit));
                }
                // Not an extraction's result (a damaged entry): extracted again, rewritten.
                Ok(Some(_)) => tracing::warn!(%key, "ignoring a malformed extraction cache entry"),
                Ok(None) => {}
                // The cache saves work; without it the document is simply extracted again.
                Err(e) => tracing::warn!(error = %e, "cannot read the extraction cache"),
            }

            job.progress(stage(0.3, "extracting")).await;
            let stop = Arc::new(AtomicBool::new(false));
            let opts = ExtractOptions {
                output,
                deadline: Some(Instant::now() + self.budget),
                stop: Some(stop.clone()),
                ..ExtractOptions::default()
            };
            let bytes = loaded.bytes.clone();
            let local_opts = opts.clone();
            // The extractor runs on a thread of its own, which dropping this future would
            // not stop: it is told to stop when the job is cancelled or the consumer lets it
            // go, and also when this future is dropped (the hard time limit), so no
            // extraction outlives its attempt by more than a moment.
            let _stop_when_dropped = StopWhenDropped(stop.clone());
            let mut local = tokio::task::spawn_blocking(move || extract(&bytes, &local_opts));
            let joined = tokio::select! {
                joined = &mut local => joined,
                _ = job.cancel.cancelled() => {
                    stop.store(true, Ordering::Relaxed);
                    local.await
                }
            };
            let extracted =
                joined.map_err(|e| HandlerError::transient("internal", e.to_string()))?;
            let extracted = match (extracted, &self.docling) {
                (Err(ExtractError::OcrRequired(_)), Some(docling)) => {
                    job.progress(stage(0.5, "ocr")).await;
                    tokio::select! {
                        converted = docling.convert(loaded.bytes.clone(), &loaded.filename, &opts) => converted,
                        _ = job.cancel.cancelled() => return Err(stopped()),
                    }
                }
                (other, _) => other,
            }
            .map_err(failure)?;

            let mut result = serde_json::to_value(&extracted)
                .map_err(|e| HandlerError::permanent("internal", e.to_string()))?;
            if let Err(e) = job.store().put_extraction(&key, &sha256, &result).await {
                tracing::warn!(error = %e, "cannot write the extraction cache");
            }
            result["sha256"] = Value::String(sha256);
            result["cached"] = false.into();
            Ok(result)
        })
    }
}

/// What a handler told to stop returns; the runtime records the reason it was told.
fn stopped() -> HandlerError {
    HandlerError::transient("stopped", "the extraction was stopped")
}

struct StopWhenDropped(Arc<AtomicBool>);

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn failure(e: ExtractError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::transient(e.code(), e.to_string())
    } else {
        HandlerError::permanent(e.code(), e.to_string())
    }
}
