//! The `llm` job kind: a job's input goes through the [`LlmGateway`]; streamed tokens leave on
//! the job's events as they arrive, and every provider call is written to `inference_logs`.
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use xenios_contract::images::{MAX_UPLOADED_IMAGES_BYTES, MAX_UPLOADED_IMAGE_BYTES};
use xenios_contract::inputs::{parse_llm, ChatMessage, LlmInput};
use xenios_contract::{JobId, JobKind};
use xenios_runtime::{Handler, HandlerError, HandlerResult, JobContext};
use xenios_store::{InferenceLog, Store};

use crate::{
    CallObserver, CallRecord, Image, LlmError, LlmGateway, LlmRequest, LlmResult, Message, Role,
    StreamEvent,
};

/// Uploaded pictures held in memory at once by one process, read and sent as base64: a
/// request whose pictures would pass it waits for others to finish. At least
/// [`MAX_UPLOADED_IMAGES_BYTES`], so that any one request can go.
const PICTURE_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// Serves `jobs.llm`. One per process: the gateway holds the providers' connection pool.
pub struct LlmHandler {
    gateway: Arc<LlmGateway>,
    /// [`PICTURE_BYTES_IN_FLIGHT`] in KiB.
    picture_kib: Arc<Semaphore>,
}

impl LlmHandler {
    pub fn new(gateway: Arc<LlmGateway>) -> Self {
        LlmHandler {
            gateway,
            picture_kib: Arc::new(Semaphore::new(kib(PICTURE_BYTES_IN_FLIGHT) as usize)),
        }
    }

    /// Room for the request's uploaded pictures, by the sizes their metadata gives, held until
    /// the request is done; none needed without uploads. Cancelling the job stops the wait.
    async fn room_for_pictures(
        &self,
        job: &JobContext,
        messages: &[ChatMessage],
    ) -> Result<Option<OwnedSemaphorePermit>, HandlerError> {
        let mut total = 0u64;
        let uploads = messages.iter().flat_map(|m| &m.images);
        for file_id in uploads.filter_map(|image| image.file_id.as_deref()) {
            total += job.file_size(file_id).await?;
        }
        if total == 0 {
            return Ok(None);
        }
        if total > MAX_UPLOADED_IMAGES_BYTES {
            return Err(too_many_picture_bytes());
        }
        let wanted = kib(total);
        tokio::select! {
            permit = self.picture_kib.clone().acquire_many_owned(wanted) => {
                Ok(permit.ok())
            }
            _ = job.cancel.cancelled() => {
                Err(HandlerError::transient("cancelled", "cancelled while waiting to read pictures"))
            }
        }
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

fn too_many_picture_bytes() -> HandlerError {
    HandlerError::permanent(
        "too_large",
        format!("the uploaded pictures exceed {MAX_UPLOADED_IMAGES_BYTES} bytes together"),
    )
}

impl Handler for LlmHandler {
    fn kind(&self) -> JobKind {
        JobKind::Llm
    }

    /// The provider's first token is what a caller waits for: the request goes out while the
    /// attempt is being recorded.
    fn starts_before_recorded(&self) -> bool {
        true
    }

    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult> {
        Box::pin(async move {
            let input = parse_llm(&job.input)
                .map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
            let stream = input.stream;
            // Dropped once the provider's answer is in (or the call failed).
            let _room = self.room_for_pictures(&job, &input.messages).await?;
            let pictures = read_pictures(&job, &input.messages).await?;
            let request = request(input, pictures)?;
            let (observer, writer) = AuditLog::start(job.store().clone(), &job);
            let outcome = if stream {
                self.stream(&job, request, &observer).await
            } else {
                self.gateway
                    .complete(request, &observer, job.cancel.clone())
                    .await
            };
            // The writer ends once the observer (its only sender) is gone and every record of
            // this attempt is stored.
            drop(observer);
            let _ = writer.await;
            match outcome {
                Ok(result) => serde_json::to_value(result)
                    .map_err(|e| HandlerError::permanent("internal", e.to_string())),
                Err(e) => Err(failure(e)),
            }
        })
    }
}

impl LlmHandler {
    /// Publishes each token the moment the gateway yields it: nothing is held back here.
    async fn stream(
        &self,
        job: &JobContext,
        request: LlmRequest,
        observer: &AuditLog,
    ) -> Result<LlmResult, LlmError> {
        let mut stream = self.gateway.stream(request, observer, job.cancel.clone());
        while let Some(item) = stream.next().await {
            match item? {
                StreamEvent::Token(text) => job.token(&text).await,
                StreamEvent::ToolCall(delta) => job.tool_call_delta(delta).await,
                StreamEvent::Done(result) => return Ok(result),
            }
        }
        Err(LlmError::Config(
            "the stream ended without a result".to_owned(),
        ))
    }
}

/// Each message's pictures: those given by URL as they are, uploads read from `FILES` and sent
/// inline, within the limits per picture and per request (the API checked the sizes it was
/// told; these are the bytes themselves).
async fn read_pictures(
    job: &JobContext,
    messages: &[ChatMessage],
) -> Result<Vec<Vec<Image>>, HandlerError> {
    let mut uploaded_bytes = 0u64;
    let mut pictures = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut images = Vec::with_capacity(m.images.len());
        for (j, image) in m.images.iter().enumerate() {
            // The input's check let through exactly one of the two.
            let Some(file_id) = image.file_id.as_deref() else {
                images.extend(image.by_url());
                continue;
            };
            let file = job.read_file(file_id, MAX_UPLOADED_IMAGE_BYTES).await?;
            uploaded_bytes += file.bytes.len() as u64;
            if uploaded_bytes > MAX_UPLOADED_IMAGES_BYTES {
                return Err(too_many_picture_bytes());
            }
            let inline = Image::inline(&file.bytes, image.detail).map_err(|e| {
                HandlerError::permanent(
                    "invalid_input",
                    format!("input.messages[{i}].images[{j}].file_id: {e}"),
                )
            })?;
            images.push(inline);
        }
        pictures.push(images);
    }
    Ok(pictures)
}

fn request(input: LlmInput, pictures: Vec<Vec<Image>>) -> Result<LlmRequest, HandlerError> {
    let sampling = input.sampling();
    let messages = input
        .messages
        .into_iter()
        .zip(pictures)
        .enumerate()
        .map(|(i, (m, images))| {
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(HandlerError::permanent(
                        "invalid_input",
                        format!("input.messages[{i}].role: `{other}` is not a role"),
                    ))
                }
            };
            Ok(Message {
                role,
                content: m.content.unwrap_or_default(),
                images,
                tool_calls: m.tool_calls,
                tool_call_id: m.tool_call_id,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LlmRequest {
        task: input.task,
        messages,
        response_format: input.response_format,
        max_tokens: input.max_tokens,
        temperature: input.temperature,
        sampling,
        stop: input.stop,
        tools: input.tools,
        tool_choice: input.tool_choice,
        parallel_tool_calls: input.parallel_tool_calls,
    })
}

/// The job's failure as the runtime takes it: retried later only if the gateway says so, and
/// not before a provider's `Retry-After` that the gateway would not wait out itself.
fn failure(e: LlmError) -> HandlerError {
    let message = e.to_string();
    match e {
        // The runtime knows why it interrupted the job (cancel, time limit, shutdown) and
        // decides on its own; this only ends the attempt.
        LlmError::Cancelled => HandlerError::transient("cancelled", message),
        e if e.retryable() => {
            HandlerError::transient(e.code(), message).with_retry_after(e.retry_after())
        }
        e => HandlerError::permanent(e.code(), message),
    }
}

/// Writes call records to `inference_logs` off the request's path: the observer only hands
/// each record to a writer task. The channel is unbounded because a request makes at most
/// candidates × tries × re-asks calls, a handful.
struct AuditLog {
    records: mpsc::UnboundedSender<CallRecord>,
}

impl AuditLog {
    /// The writer is spawned, so rows already handed over are written even if the attempt is
    /// abandoned; it finishes when the `AuditLog` is dropped and its queue is empty.
    fn start(store: Store, job: &JobContext) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallRecord>();
        let user_id = job.user_id.clone();
        let job_id: JobId = job.job_id;
        let writer = tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                let log = row(&record, user_id.clone(), job_id);
                if let Err(e) = store.insert_inference_log(&log).await {
                    tracing::warn!(error = %e, attempt = record.attempt, "cannot write an inference log");
                }
            }
        });
        (AuditLog { records: tx }, writer)
    }
}

impl CallObserver for AuditLog {
    fn on_call(&self, record: &CallRecord) {
        let _ = self.records.send(record.clone());
    }
}

fn row(record: &CallRecord, user_id: Option<String>, job_id: JobId) -> InferenceLog {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    InferenceLog {
        id: uuid::Uuid::now_v7(),
        created_at: chrono::Utc::now(),
        user_id,
        job_id: Some(job_id),
        task: record.task.clone(),
        model: record.model.clone(),
        provider: record.provider.clone(),
        attempt: i32::try_from(record.attempt).unwrap_or(i32::MAX),
        input_tokens: int(record.input_tokens),
        output_tokens: int(record.output_tokens),
        cache_read_tokens: int(record.cache_read_tokens),
        cache_write_tokens: int(record.cache_write_tokens),
        latency_ms: int(record.latency_ms),
        ttft_ms: record.ttft_ms.map(int),
        cost_usd: record.cost_usd,
        success: record.success,
        // The table has no status column; a provider's refusal is part of what went wrong, a
        // 2xx (a stream that broke or was cancelled) is not.
        error: record.error.as_ref().map(|e| match record.status {
            Some(status) if !(200..300).contains(&status) => format!("HTTP {status}: {e}"),
            _ => e.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rate_limited(retry_after: Option<Duration>) -> LlmError {
        LlmError::Provider {
            provider: "openai".into(),
            model: "gpt-busy".into(),
            message: "HTTP 429: slow down".into(),
            retryable: true,
            retry_after,
        }
    }

    #[test]
    fn a_providers_retry_after_reaches_the_runtime() {
        let wait = Duration::from_secs(120);
        let every_candidate = LlmError::Exhausted {
            task: "chat".into(),
            summary: "openai failed for gpt-busy: HTTP 429: slow down".into(),
            retryable: true,
            last: Box::new(rate_limited(Some(wait))),
        };
        let error = failure(every_candidate);
        assert!(matches!(error, HandlerError::Transient { .. }), "{error}");
        assert_eq!(error.job_error().code, "provider_error");
        assert_eq!(error.retry_after(), Some(wait));
    }

    #[test]
    fn a_failure_without_retry_after_leaves_the_runtime_its_backoff() {
        let error = failure(rate_limited(None));
        assert!(matches!(error, HandlerError::Transient { .. }), "{error}");
        assert_eq!(error.retry_after(), None);
    }

    #[test]
    fn a_row_has_the_records_figures_and_names_only_a_refusing_status() {
        let cancelled = CallRecord {
            task: "chat".into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            attempt: 1,
            streaming: true,
            status: Some(200),
            input_tokens: 6,
            output_tokens: 3,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 40,
            ttft_ms: Some(10),
            cost_usd: Some(2.7e-6),
            success: false,
            error: Some(
                "cancelled; usage estimated from the prompt and the 3 pieces received".into(),
            ),
        };
        let job_id = uuid::Uuid::now_v7();
        let row = row(&cancelled, Some("u1".into()), job_id);
        assert_eq!(
            (
                row.input_tokens,
                row.output_tokens,
                row.ttft_ms,
                row.cost_usd
            ),
            (6, 3, Some(10), Some(2.7e-6))
        );
        assert_eq!(row.error, cancelled.error);
        let refused = CallRecord {
            status: Some(503),
            error: Some("upstream overloaded".into()),
            ..cancelled
        };
        assert_eq!(
            super::row(&refused, None, job_id).error.as_deref(),
            Some("HTTP 503: upstream overloaded")
        );
    }
}
