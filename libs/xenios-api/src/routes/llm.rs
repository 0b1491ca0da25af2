//! The LLM gateway routes (SPEC §3): a request becomes an `llm` job on `jobs.llm`, like any
//! other job (recorded, limited, retried, audited), and the route follows the job's events
//! to its end: whole for `complete`, token by token for `stream`. A request that goes away
//! before the end cancels its job, so the provider call beneath it stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use utoipa::ToSchema;
use xenios_auth::UserContext;
use xenios_contract::envelope::JobEvent;
use xenios_contract::tools::ToolCallDelta;
use xenios_contract::{JobError, JobId, JobKind, JobStatus};
use xenios_store::NewJob;

use crate::auth::User;
use crate::budget;
use crate::correlation::CorrelationId;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::events::{sleep_until, sse_response, sse_slot, FeedItem, JobFeed, TERMINAL_GRACE};
use crate::rate_limit::RouteGroup;
use crate::routes::jobs::{cancel, check_input, check_uploaded_pictures, enqueue_while_recording};
use crate::state::AppState;

/// Names the job a gateway answer came from, for `GET /api/v1/jobs/{id}` and the audit.
pub const JOB_ID_HEADER: HeaderName = HeaderName::from_static("x-job-id");

/// The body of `/api/v1/llm/complete` and `/api/v1/llm/stream`: the `llm` job input.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmBody {
    /// A task of the routing table (`llm.tasks`): session_summary, insight_generation, chat,
    /// intent_classification, entity_extraction, or one configuration adds.
    task: String,
    messages: Vec<LlmMessage>,
    /// `{"type":"json_schema","json_schema":{"name","schema"}}`, `{"type":"json_object"}` or
    /// `{"type":"text"}`; a JSON answer is validated and returned as `parsed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    response_format: Option<Value>,
    /// Overrides the task's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// Overrides the task's value (0 to 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    /// Up to 4 sequences that end the answer where the model writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stop: Vec<String>,
    /// Nucleus sampling, 0 to 1 (sent to Anthropic instead of the temperature).
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    /// Best-effort repeatable sampling (OpenAI-compatible providers).
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    /// -2 to 2 (OpenAI-compatible providers).
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    /// -2 to 2 (OpenAI-compatible providers).
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    /// Up to 128 functions the model may call instead of answering (OpenAI's shape); its calls
    /// come back as `tool_calls`, their results go in `tool` messages of the next request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<LlmTool>,
    /// `"none"`, `"auto"` (the default), `"required"`, or
    /// `{"type":"function","function":{"name"}}` for one of `tools`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    /// Whether the model may call several tools in one answer (by default it may).
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmMessage {
    /// system, user, assistant or tool.
    role: String,
    /// Required, but may be null or absent in an assistant message with `tool_calls` and in a
    /// user message with `images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// A user message's pictures (up to 20 in a request), shown to the model before its text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<LlmImage>,
    /// An assistant message's calls, as an answer gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallBody>,
    /// A `tool` message's: the id of the call whose result `content` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

/// A picture: by URL, as OpenAI's `image_url` part holds it, or an upload; one of the two.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmImage {
    /// `https://…` (the provider fetches it) or `data:image/<png|jpeg|gif|webp>;base64,…`
    /// (within `jobs.max_input_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// A PNG, JPEG, GIF or WebP of `POST /api/v1/files`, up to 5 MiB (20 MiB in a request),
    /// read by the consumer and sent inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<String>,
    /// `auto`, `low` or `high`: OpenAI's resolution hint; Anthropic has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// A function the model may call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmTool {
    /// `function`.
    #[serde(rename = "type")]
    kind: String,
    function: LlmFunction,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmFunction {
    /// 1 to 64 letters, digits, `_` or `-`; unique among the tools.
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The arguments' JSON Schema (an object); absent when the function takes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// OpenAI's structured outputs for the arguments (OpenAI-compatible providers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// A call the model made, in OpenAI's shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolCallBody {
    /// Named by the `tool` message that carries the result.
    pub id: String,
    /// `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCallBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallBody {
    pub name: String,
    /// The arguments as JSON text, as the model wrote them.
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

impl LlmBody {
    fn into_input(self, stream: bool) -> Value {
        let mut input = serde_json::to_value(self).unwrap_or_default();
        input["stream"] = stream.into();
        input
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct LlmUsage {
    /// Every input token billed, cached or not.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache; absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, those written to the provider's prompt cache; absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `llm` job result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmAnswer {
    pub content: String,
    /// The model that answered, as the routing table names it.
    pub model: String,
    /// The answer came from a fallback candidate.
    pub fallback_used: bool,
    pub usage: LlmUsage,
    pub latency_ms: u64,
    /// Estimated (price table) or reported by the provider; null when unknown.
    pub cost_usd: Option<f64>,
    /// The validated JSON value, when a JSON `response_format` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parsed: Option<Value>,
    /// Why the answer ended: `stop`, `length` (`max_tokens` cut it short),
    /// `content_filter` or `tool_calls`.
    #[serde(default = "stopped")]
    pub finish_reason: String,
    /// The tools the model called, for the caller to run; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallBody>,
}

/// The finish reason of a result stored before results had one.
fn stopped() -> String {
    "stop".into()
}

impl LlmAnswer {
    pub fn from_result(result: Value) -> Result<LlmAnswer, ApiError> {
        serde_json::from_value(result)
            .map_err(|e| ApiError::internal(format!("an llm job result does not parse: {e}")))
    }
}

/// The `done` event of `/api/v1/llm/stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamDone {
    model: String,
    fallback_used: bool,
    usage: LlmUsage,
    latency_ms: u64,
    cost_usd: Option<f64>,
    /// `stop`, `length` (`max_tokens` cut the answer short), `content_filter` or `tool_calls`.
    finish_reason: String,
    /// The tools the model called, whole (this route streams only text); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallBody>,
}

/// Runs an LLM request through `jobs.llm` and answers with the whole result.
#[utoipa::path(post, path = "/api/v1/llm/complete", tag = "llm",
    security(("api_key" = [], "bearer" = [])),
    request_body = LlmBody,
    responses(
        (status = 200, body = LlmAnswer, description = "the answer; `X-Job-Id` names its job"),
        (status = 400, body = ErrorBody, description = "the provider refused the request"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the job was cancelled"),
        (status = 422, body = ErrorBody, description = "bad input, unknown task, or an answer that never matched the schema"),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "providers unavailable, queue full, or no answer in time"),
    ))]
pub async fn complete(
    State(state): State<AppState>,
    user: User,
    CorrelationId(correlation_id): CorrelationId,
    ApiJson(body): ApiJson<LlmBody>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Llm, &user.caller.subject())?;
    let mut call = LlmCall::start(
        &state,
        Some(&user.user),
        correlation_id,
        body.into_input(false),
    )
    .await?;
    let headers = job_header(call.job_id);
    let answer = match call.finish().await {
        Ok(result) => LlmAnswer::from_result(result)?,
        Err(error) => return Ok((headers, job_failure(&error)).into_response()),
    };
    Ok((headers, axum::Json(answer)).into_response())
}

/// Runs an LLM request through `jobs.llm` and streams its answer as Server-Sent Events:
/// `token` `{"text"}` as each arrives, then `done` (or `error` `{"code","message","retryable"}`).
/// Tool calls are not streamed here (`/v1/chat/completions` streams them): `done` carries
/// them whole.
#[utoipa::path(post, path = "/api/v1/llm/stream", tag = "llm",
    security(("api_key" = [], "bearer" = [])),
    request_body = LlmBody,
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "`token` events, then `done` (StreamDone) or `error`; `X-Job-Id` names the job"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    user: User,
    CorrelationId(correlation_id): CorrelationId,
    ApiJson(body): ApiJson<LlmBody>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Llm, &user.caller.subject())?;
    let slot = sse_slot(&state, &user.caller)?;
    let call = LlmCall::start(
        &state,
        Some(&user.user),
        correlation_id,
        body.into_input(true),
    )
    .await?;
    let job_id = call.job_id;
    let events = futures::stream::unfold(Some(call), |call| async move {
        let mut call = call?;
        // The calls come whole in `done`: this route's `token` events are text (SPEC §3).
        let event = loop {
            break match call.next().await {
                Update::ToolCall(_) => continue,
                Update::Token(text) => {
                    let event = JobEvent::token(text);
                    return Some((sse(event.event_type(), event.sse_data()), Some(call)));
                }
                Update::Done(result) => match LlmAnswer::from_result(result) {
                    Ok(a) => sse(
                        "done",
                        json_text(&StreamDone {
                            model: a.model,
                            fallback_used: a.fallback_used,
                            usage: a.usage,
                            latency_ms: a.latency_ms,
                            cost_usd: a.cost_usd,
                            finish_reason: a.finish_reason,
                            tool_calls: a.tool_calls,
                        }),
                    ),
                    Err(e) => sse("error", json_text(&internal_error(&e))),
                },
                Update::Failed(error) => sse("error", json_text(&error)),
            };
        };
        Some((event, None))
    });
    Ok((job_header(job_id), sse_response(&state, slot, events)).into_response())
}

fn sse(event: &str, data: String) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(event).data(data))
}

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn internal_error(e: &ApiError) -> JobError {
    tracing::error!(error = %e, "cannot relay an llm result");
    JobError {
        code: "internal".into(),
        message: "internal error".into(),
        retryable: false,
    }
}

pub(crate) fn job_header(job_id: JobId) -> [(HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&job_id.to_string()).expect("a uuid is a header value");
    [(JOB_ID_HEADER, value)]
}

/// A failed `llm` job as an HTTP error.
pub(crate) fn job_failure(error: &JobError) -> ApiError {
    let message = error.message.clone();
    match error.code.as_str() {
        "invalid_input" => ApiError::invalid(message),
        "schema_validation_failed" => ApiError::InvalidInput {
            status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            message,
            details: None,
        },
        "cancelled" => ApiError::Conflict(message),
        "timeout" | "provider_error" | "queue_full" | "unavailable" => ApiError::Unavailable {
            message,
            retry_after: Some(Duration::from_secs(1)),
        },
        code => ApiError::internal(format!("llm job failed: {code}: {message}")),
    }
}

/// What happened next to a followed `llm` job.
pub(crate) enum Update {
    Token(String),
    /// A piece of a tool call the model is making (the calls come whole with the result too).
    ToolCall(ToolCallDelta),
    /// The job's result.
    Done(Value),
    Failed(JobError),
}

/// An `llm` job this request started and follows to its end. Dropped before the end (the
/// client went away, the wait ran out), it cancels the job, which stops the provider call.
pub(crate) struct LlmCall {
    pub job_id: JobId,
    state: AppState,
    feed: JobFeed,
    deadline: Instant,
    /// Set once the store shows the job finished: past it, the outcome comes from the store.
    grace: Option<Instant>,
    last_error: Option<JobError>,
    streamed: bool,
    /// Pieces of tool calls have come: a client that streams them has the calls already.
    pub streamed_tool_calls: bool,
    finished: bool,
}

impl LlmCall {
    /// Checks an `llm` job (an error names the field as the LLM routes' body does), and
    /// records and publishes it together (its caller waits for the first token). The feed
    /// exists before the job is published, so no event of it can be missed.
    pub async fn start(
        state: &AppState,
        user: Option<&UserContext>,
        correlation_id: String,
        input: Value,
    ) -> Result<LlmCall, ApiError> {
        let checked = async {
            check_input(state, JobKind::Llm, &input)?;
            check_uploaded_pictures(state, user, &input).await?;
            budget::check(state, user).await
        };
        // The checks name the job input's fields (`input.messages…`); these routes' body is
        // the input itself.
        checked.await.map_err(|e| {
            e.renaming_fields(|field| field.strip_prefix("input.").unwrap_or(field).to_owned())
        })?;
        let user_id = user.map(|u| u.user_id.clone());
        let job_id = xenios_contract::new_job_id();
        let feed = JobFeed::live(state.hub.clone(), state.jetstream.clone(), job_id);
        enqueue_while_recording(
            state,
            NewJob {
                id: job_id,
                kind: JobKind::Llm,
                user_id,
                input,
                correlation_id,
                idempotency_key: None,
                webhook_url: None,
            },
        )
        .await?;
        Ok(LlmCall {
            job_id,
            state: state.clone(),
            feed,
            // A job gets no longer than its hard limit to run.
            deadline: Instant::now() + state.settings.jobs.llm.hard_limit(),
            grace: None,
            last_error: None,
            streamed: false,
            streamed_tool_calls: false,
            finished: false,
        })
    }

    /// The result, skipping tokens.
    pub async fn finish(&mut self) -> Result<Value, JobError> {
        loop {
            match self.next().await {
                Update::Token(_) | Update::ToolCall(_) => {}
                Update::Done(result) => return Ok(result),
                Update::Failed(error) => return Err(error),
            }
        }
    }

    /// The next token, or how the job ended. After `Done` or `Failed` there is nothing more.
    pub async fn next(&mut self) -> Update {
        loop {
            let item = tokio::select! {
                item = self.feed.next() => item,
                _ = tokio::time::sleep_until(self.deadline) => {
                    return Update::Failed(JobError {
                        code: "timeout".into(),
                        message: "no answer within the llm job's time limit".into(),
                        retryable: true,
                    });
                }
                _ = sleep_until(self.grace) => return self.outcome_from_store().await,
            };
            let stored = match item {
                Ok(FeedItem::Event(stored)) => stored,
                Ok(FeedItem::CaughtUp) => {
                    if let Ok(Some(job)) = self.state.store.get_job(self.job_id).await {
                        if job.status.is_terminal() && self.grace.is_none() {
                            self.grace = Some(Instant::now() + TERMINAL_GRACE);
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, job_id = %self.job_id, "cannot follow an llm job");
                    return Update::Failed(JobError {
                        code: "unavailable".into(),
                        message: "the job's events are unavailable right now".into(),
                        retryable: true,
                    });
                }
            };
            match &*stored.event {
                JobEvent::Token(token) => {
                    self.streamed = true;
                    return match &token.tool_call {
                        Some(delta) => {
                            self.streamed_tool_calls = true;
                            Update::ToolCall(ToolCallDelta::clone(delta))
                        }
                        None => Update::Token(token.text.clone()),
                    };
                }
                JobEvent::Result(result) => {
                    self.finished = true;
                    return Update::Done(result.clone());
                }
                JobEvent::ResultStored(_) => return self.outcome_from_store().await,
                // A later try would start the answer again, which a client that has part of
                // it cannot take: the job is cancelled (on drop) and the client told.
                JobEvent::Error(error) if self.streamed => return Update::Failed(error.clone()),
                JobEvent::Error(error) => self.last_error = Some(error.clone()),
                JobEvent::Status(change) => match change.status {
                    JobStatus::Failed => {
                        self.finished = true;
                        return Update::Failed(self.last_error.take().unwrap_or_else(|| {
                            JobError {
                                code: "internal".into(),
                                message: "the job failed".into(),
                                retryable: false,
                            }
                        }));
                    }
                    JobStatus::Cancelled => {
                        self.finished = true;
                        return Update::Failed(cancelled());
                    }
                    // The result comes before this; without it, the store has it.
                    JobStatus::Succeeded => return self.outcome_from_store().await,
                    JobStatus::Queued | JobStatus::Running => {}
                },
                JobEvent::Progress(_) => {}
            }
        }
    }

    /// The outcome of a job the store shows finished, for when its events are missing.
    async fn outcome_from_store(&mut self) -> Update {
        let job = match self.state.store.get_job(self.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) | Err(_) => {
                return Update::Failed(JobError {
                    code: "unavailable".into(),
                    message: "the job's outcome cannot be read right now".into(),
                    retryable: true,
                })
            }
        };
        self.finished = job.status.is_terminal();
        match (job.status, job.result, job.error) {
            (JobStatus::Succeeded, Some(result), _) => Update::Done(result),
            (JobStatus::Cancelled, _, _) => Update::Failed(cancelled()),
            (_, _, Some(error)) => Update::Failed(error),
            (status, _, None) => Update::Failed(JobError {
                code: "internal".into(),
                message: format!("the job is {status} without an outcome"),
                retryable: false,
            }),
        }
    }
}

impl Drop for LlmCall {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, job_id) = (self.state.clone(), self.job_id);
        runtime.spawn(async move {
            match cancel(&state, job_id).await {
                Ok(_) => tracing::info!(%job_id, "llm request ended early; job cancelled"),
                Err(e) => tracing::warn!(%job_id, error = %e, "cannot cancel an abandoned llm job"),
            }
        });
    }
}

fn cancelled() -> JobError {
    JobError {
        code: "cancelled".into(),
        message: "the job was cancelled".into(),
        retryable: false,
    }
}
