//! `POST /v1/chat/completions`, OpenAI-compatible, so the official OpenAI SDKs work against the
//! gateway. `model` names a task (`chat`, or `xenios/chat`); the request runs as an `llm` job
//! exactly like `/api/v1/llm/*`. Errors have OpenAI's shape,
//! `{"error":{"message","type","param","code"}}`.
//!
//! Credentials, as the SDKs can send them: either `Authorization: Bearer <API key>` alone (what
//! an SDK sends with `api_key=<API key>`: a service call, with no user), or `X-API-Key: <API
//! key>` with `Authorization: Bearer <user JWT>` as on `/api/v1/*` (the SDK's `api_key` is then
//! the JWT and `X-API-Key` a default header): the job belongs to that user.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use xenios_contract::images::{Image, MAX_IMAGES};

use crate::auth::{Caller, API_KEY_HEADER};
use crate::correlation::CorrelationId;
use crate::error::ApiError;
use crate::events::{sse_response, sse_slot};
use crate::rate_limit::RouteGroup;
use crate::routes::llm::{job_failure, job_header, LlmAnswer, LlmCall, ToolCallBody, Update};
use crate::state::AppState;

/// `model` may name a task with this prefix, as model ids of a gateway usually are.
const MODEL_PREFIX: &str = "xenios/";

/// The task a `model` names (`chat` or `xenios/chat`), if the routing table has it.
fn task_of<'m>(model: &'m str, llm: &xenios_config::LlmSettings) -> Option<&'m str> {
    let task = model.strip_prefix(MODEL_PREFIX).unwrap_or(model);
    llm.tasks.contains_key(task).then_some(task)
}

/// An [`ApiError`] in OpenAI's error shape; status and `Retry-After` stay the same.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<JsonRejection> for OpenAiError {
    fn from(rejection: JsonRejection) -> Self {
        OpenAiError(rejection.into())
    }
}

impl From<PathRejection> for OpenAiError {
    fn from(rejection: PathRejection) -> Self {
        OpenAiError(rejection.into())
    }
}

impl From<xenios_auth::AuthError> for OpenAiError {
    fn from(e: xenios_auth::AuthError) -> Self {
        OpenAiError(e.into())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    message: String,
    /// invalid_request_error, authentication_error, permission_error, not_found_error,
    /// rate_limit_error or server_error.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request field at fault, if one is.
    param: Option<String>,
    /// The code of the `/api/v1` error body: invalid_input, unauthorized, rate_limited, …
    code: &'static str,
}

impl OpenAiError {
    fn body(&self) -> OpenAiErrorBody {
        let e = &self.0;
        let kind = match e.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        };
        let param = match e {
            ApiError::InvalidInput {
                details: Some(details),
                ..
            } => details[0]["field"].as_str().map(str::to_owned),
            _ => None,
        };
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: e.to_string(),
                kind,
                param,
                code: e.code(),
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = axum::Json(self.body()).into_response().into_body();
        // The `/api/v1` response carries the status, `Retry-After` and the logging.
        let (mut parts, _) = self.0.into_response().into_parts();
        parts.headers.remove(CONTENT_LENGTH);
        Response::from_parts(parts, body)
    }
}

/// `Json` whose rejections are [`OpenAiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(OpenAiError))]
pub struct OpenAiJson<T>(pub T);

/// `Path` whose rejections are [`OpenAiError`]s (a model name that is not UTF-8).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(OpenAiError))]
pub struct OpenAiPath<T>(pub T);

/// Authenticates `/v1/*` requests (see the module description) and applies the per-key limit.
pub async fn auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, OpenAiError> {
    let headers = req.headers();
    let authorization = match headers.get(AUTHORIZATION) {
        Some(value) => Some(value.to_str().map_err(|_| {
            OpenAiError(ApiError::Unauthorized(
                "malformed Authorization header".into(),
            ))
        })?),
        None => None,
    };
    let caller = match headers.get(API_KEY_HEADER) {
        Some(key) => {
            let key = state.auth.check_api_key(key.to_str().ok())?;
            let user = match authorization {
                Some(value) => Some(state.auth.verify_bearer(Some(value)).await?),
                None => None,
            };
            Caller { key, user }
        }
        None => {
            let key = authorization
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key.trim());
            Caller {
                key: state.auth.check_api_key(key)?,
                user: None,
            }
        }
    };
    state
        .limits
        .check(RouteGroup::PerKey, &caller.key.to_string())?;
    if let Some(user) = &caller.user {
        tracing::Span::current().record("user_id", user.user_id.as_str());
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// An OpenAI chat completion request. Fields this gateway does not use (user, logit_bias,
/// stream_options, …) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A task of the routing table (`chat`), or `xenios/<task>`.
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`; wins over it.
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    #[schema(value_type = Option<Object>)]
    response_format: Option<Value>,
    /// A sequence, or up to 4, that ends the answer.
    #[schema(value_type = Option<Object>)]
    stop: Option<Value>,
    /// 0 to 1 (sent to Anthropic models instead of the temperature).
    top_p: Option<f64>,
    seed: Option<i64>,
    /// -2 to 2; not sent to Anthropic models, which have none.
    presence_penalty: Option<f64>,
    /// -2 to 2; not sent to Anthropic models, which have none.
    frequency_penalty: Option<f64>,
    /// Only 1.
    n: Option<u32>,
    /// Up to 128 functions the model may call.
    #[schema(value_type = Option<Vec<crate::routes::llm::LlmTool>>)]
    tools: Option<Value>,
    /// `"none"`, `"auto"`, `"required"` or `{"type":"function","function":{"name"}}`.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// OpenAI's deprecated form of `tools`: refused, so that a client using it is not left
    /// believing the model chose not to call.
    #[schema(value_type = Option<Object>)]
    functions: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// system (or developer), user, assistant or tool.
    role: String,
    /// Text, or a list of `{"type":"text","text"}` parts and, in a user message,
    /// `{"type":"image_url","image_url":{"url","detail"?}}` parts (an https URL or a base64
    /// `data:image/…` URL), `{"type":"file","file":{"file_id"}}` parts (a picture uploaded with
    /// `POST /api/v1/files`); up to 20 pictures in a request; null in an assistant message that
    /// only calls tools.
    #[schema(value_type = Object)]
    #[serde(default)]
    content: Value,
    /// An assistant message's calls.
    #[schema(value_type = Option<Vec<ToolCallBody>>)]
    tool_calls: Option<Value>,
    /// A `tool` message's: the call whose result `content` is.
    tool_call_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<job id>`.
    id: String,
    object: &'static str,
    created: i64,
    /// The model that answered.
    model: String,
    choices: Vec<Choice>,
    usage: CompletionUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    index: u32,
    message: AssistantMessage,
    /// `stop`, `length` (`max_tokens` cut the answer short), `content_filter` or
    /// `tool_calls`.
    finish_reason: String,
    #[schema(value_type = Option<Object>)]
    logprobs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    role: &'static str,
    /// Null when the answer has no text (it only calls tools).
    content: Option<String>,
    refusal: Option<String>,
    /// The tools the model called; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallBody>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
}

/// Of `prompt_tokens`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Read from the provider's prompt cache.
    cached_tokens: u64,
    /// Written to the provider's prompt cache (OpenRouter's name; Anthropic's cache writes).
    cache_write_tokens: u64,
}

impl From<&LlmAnswer> for CompletionUsage {
    fn from(answer: &LlmAnswer) -> Self {
        let usage = &answer.usage;
        let (input, output) = (usage.input_tokens, usage.output_tokens);
        CompletionUsage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: input.saturating_add(output),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: usage.cache_read_tokens,
                cache_write_tokens: usage.cache_write_tokens,
            },
        }
    }
}

impl ChatCompletionRequest {
    /// The `llm` job input this request asks for, and where its pictures came from.
    fn into_input(
        self,
        tasks: &xenios_config::LlmSettings,
    ) -> Result<(Value, PictureParts), ApiError> {
        let invalid = |field: &str, message: String| ApiError::InvalidInput {
            status: StatusCode::BAD_REQUEST,
            details: Some(json!([{ "field": field, "message": message }])),
            message: format!("{field}: {message}"),
        };
        let Some(task) = task_of(&self.model, tasks) else {
            let known: Vec<&str> = tasks.tasks.keys().map(String::as_str).collect();
            return Err(invalid(
                "model",
                format!(
                    "unknown model `{}`; models are the tasks: {}",
                    self.model,
                    known.join(", ")
                ),
            ));
        };
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n", "only one choice is supported".into()));
        }
        if self.functions.is_some_and(|f| !f.is_null()) {
            return Err(invalid(
                "functions",
                "deprecated and not supported: use `tools`".into(),
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        let mut pictures = 0;
        let mut parts = PictureParts::default();
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                other => {
                    return Err(invalid(
                        &format!("messages[{i}].role"),
                        format!(
                            "`{other}` is not supported (system, developer, user, assistant, tool)"
                        ),
                    ))
                }
            };
            let field = format!("messages[{i}].content");
            let (content, images, from) = content_of(&m.content, &field, &mut pictures)
                .map_err(|(field, message)| invalid(&field, message))?;
            parts.0.push(from);
            if !images.is_empty() && role != "user" {
                return Err(invalid(&field, "only a user message shows pictures".into()));
            }
            let mut message = json!({ "role": role, "content": content });
            if !images.is_empty() {
                message["images"] = images.into();
            }
            // The job input checks them, and names the field at fault.
            if let Some(calls) = m.tool_calls.filter(|c| !c.is_null()) {
                message["tool_calls"] = calls;
            }
            if let Some(id) = m.tool_call_id {
                message["tool_call_id"] = id.into();
            }
            messages.push(message);
        }
        let mut input = json!({
            "task": task,
            "messages": messages,
            "stream": self.stream,
        });
        for (field, value) in [
            ("tools", self.tools),
            ("tool_choice", self.tool_choice),
            (
                "parallel_tool_calls",
                self.parallel_tool_calls.map(Value::from),
            ),
        ] {
            if let Some(value) = value.filter(|v| !v.is_null()) {
                input[field] = value;
            }
        }
        if let Some(max) = self.max_completion_tokens.or(self.max_tokens) {
            input["max_tokens"] = max.into();
        }
        if let Some(t) = self.temperature {
            input["temperature"] = t.into();
        }
        if let Some(p) = self.top_p {
            input["top_p"] = p.into();
        }
        if let Some(seed) = self.seed {
            input["seed"] = seed.into();
        }
        if let Some(p) = self.presence_penalty {
            input["presence_penalty"] = p.into();
        }
        if let Some(p) = self.frequency_penalty {
            input["frequency_penalty"] = p.into();
        }
        if let Some(rf) = self.response_format {
            input["response_format"] = rf;
        }
        match self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(stop)) => input["stop"] = json!([stop]),
            Some(stop @ Value::Array(_)) => input["stop"] = stop,
            Some(_) => return Err(invalid("stop", "a string or a list of strings".into())),
        }
        Ok((input, parts))
    }
}

/// Where each picture of the job input came from: per message, the index and type of the
/// content part of each of its pictures, so that the checks, which name
/// `messages[i].images[j]`, can name the request's own field.
#[derive(Debug, Default)]
struct PictureParts(Vec<Vec<(usize, &'static str)>>);

impl PictureParts {
    /// A field of the LLM routes' body (as `LlmCall::start` names it) as this request names
    /// it: the `task` is the `model`, a picture the content part it came from.
    fn request_field(&self, field: &str) -> String {
        if field == "task" {
            return "model".to_owned();
        }
        let picture = picture_of(field).and_then(|(i, j)| {
            let &(k, part) = self.0.get(i)?.get(j)?;
            Some(format!("messages[{i}].content[{k}].{part}"))
        });
        picture.unwrap_or_else(|| field.to_owned())
    }
}

/// `(i, j)` of a field `messages[i].images[j]…`.
fn picture_of(field: &str) -> Option<(usize, usize)> {
    let (i, rest) = field.strip_prefix("messages[")?.split_once("].images[")?;
    let (j, _) = rest.split_once(']')?;
    Some((i.parse().ok()?, j.parse().ok()?))
}

/// A message's text and pictures: a string, or a list of `text`, `image_url` and `file` parts
/// (the texts joined, the pictures in order, with the index and type of the part each came
/// from). `pictures` counts them across the request, to its limit. An error names the part at
/// fault.
#[allow(clippy::type_complexity)]
fn content_of(
    content: &Value,
    field: &str,
    pictures: &mut usize,
) -> Result<(String, Vec<Value>, Vec<(usize, &'static str)>), (String, String)> {
    let parts = match content {
        Value::Null => return Ok((String::new(), Vec::new(), Vec::new())),
        Value::String(text) => return Ok((text.clone(), Vec::new(), Vec::new())),
        Value::Array(parts) => parts,
        _ => return Err((field.into(), "a string or a list of parts".into())),
    };
    let (mut text, mut images, mut from) = (String::new(), Vec::new(), Vec::new());
    for (k, part) in parts.iter().enumerate() {
        let at = format!("{field}[{k}]");
        match (part["type"].as_str(), &part["text"], &part["image_url"]) {
            (Some("text"), Value::String(piece), _) => text.push_str(piece),
            (Some("text"), _, _) => return Err((format!("{at}.text"), "a string".into())),
            (Some("image_url" | "file"), _, _) if *pictures == MAX_IMAGES => {
                return Err((at, format!("at most {MAX_IMAGES} pictures per request")));
            }
            (Some("image_url"), _, image_url) => {
                *pictures += 1;
                // Older clients send the URL itself; the SDKs `{"url","detail"}`.
                let image = match image_url {
                    Value::String(url) => json!({ "url": url }),
                    image_url => image_url.clone(),
                };
                let checked = Image::deserialize(&image)
                    .map_err(|e| e.to_string())
                    .and_then(|image| image.check());
                if let Err(message) = checked {
                    return Err((format!("{at}.image_url"), message));
                }
                images.push(image);
                from.push((k, "image_url"));
            }
            // OpenAI's part for an uploaded file; here a picture of `POST /api/v1/files`.
            (Some("file"), _, _) => {
                *pictures += 1;
                let file = &part["file"];
                match (file["file_id"].as_str(), file.as_object().map(|f| f.len())) {
                    (Some(id), Some(1)) => {
                        images.push(json!({ "file_id": id }));
                        from.push((k, "file"));
                    }
                    _ => {
                        return Err((
                            format!("{at}.file"),
                            "only `{\"file_id\"}`, of a picture uploaded with POST /api/v1/files"
                                .into(),
                        ))
                    }
                }
            }
            (other, _, _) => {
                let kind = other.unwrap_or("untyped");
                return Err((
                    format!("{at}.type"),
                    format!("`{kind}` parts are not supported (text, image_url, file)"),
                ));
            }
        }
    }
    Ok((text, images, from))
}

/// OpenAI-compatible chat completions, whole or streamed (`stream: true`: `chat.completion.chunk`
/// events, the last with `finish_reason` and `usage`, then `data: [DONE]`). Tool calls stream
/// as OpenAI's do: `delta.tool_calls` pieces, a call's first with its `index`, `id`, `type`
/// and `function.name`, the later ones adding to its `function.arguments`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    security(("bearer" = []), ("api_key" = [], "bearer" = [])),
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, body = ChatCompletion,
         description = "the completion, or with `stream: true` a `text/event-stream` of chunks"),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 409, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    CorrelationId(correlation_id): CorrelationId,
    OpenAiJson(body): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    state.limits.check(RouteGroup::Llm, &caller.subject())?;
    let stream = body.stream;
    let requested = body.model.clone();
    let (input, pictures) = body.into_input(&state.settings.llm)?;
    let slot = if stream {
        Some(sse_slot(&state, &caller)?)
    } else {
        None
    };
    let mut call = LlmCall::start(&state, caller.user.as_ref(), correlation_id, input)
        .await
        .map_err(|e| e.renaming_fields(|field| pictures.request_field(field)))?;
    let job_id = call.job_id;
    let id = format!("chatcmpl-{job_id}");
    let created = Utc::now().timestamp();
    if !stream {
        let answer = match call.finish().await {
            Ok(result) => LlmAnswer::from_result(result)?,
            Err(error) => {
                let error = OpenAiError(job_failure(&error));
                return Ok((job_header(job_id), error).into_response());
            }
        };
        let completion = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: answer.model.clone(),
            usage: CompletionUsage::from(&answer),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: Some(answer.content).filter(|text| !text.is_empty()),
                    refusal: None,
                    tool_calls: answer.tool_calls,
                },
                finish_reason: answer.finish_reason,
                logprobs: None,
            }],
        };
        return Ok((job_header(job_id), axum::Json(completion)).into_response());
    }

    let chunk = move |model: &str, delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let events = futures::stream::unfold(Phase::Start(call), move |phase| {
        let chunk = chunk.clone();
        let requested = requested.clone();
        async move {
            let (data, next) = match phase {
                Phase::Start(call) => (
                    chunk(
                        &requested,
                        json!({"role": "assistant", "content": ""}),
                        None,
                    ),
                    Phase::Running(call),
                ),
                Phase::Running(mut call) => match call.next().await {
                    Update::Token(text) => (
                        chunk(&requested, json!({ "content": text }), None),
                        Phase::Running(call),
                    ),
                    Update::ToolCall(delta) => (
                        chunk(&requested, json!({ "tool_calls": [delta] }), None),
                        Phase::Running(call),
                    ),
                    Update::Done(result) => match LlmAnswer::from_result(result) {
                        Ok(answer) => {
                            let finish = Some(answer.finish_reason.as_str());
                            let mut last = chunk(&answer.model, json!({}), finish);
                            last["usage"] = json!(CompletionUsage::from(&answer));
                            // Streamed piece by piece already, or else whole here.
                            let whole = match call.streamed_tool_calls {
                                true => None,
                                false => tool_calls_delta(&answer.tool_calls),
                            };
                            match whole {
                                Some(delta) => {
                                    (chunk(&answer.model, delta, None), Phase::Finishing(last))
                                }
                                None => (last, Phase::Finished),
                            }
                        }
                        Err(e) => (json!(OpenAiError(e).body()), Phase::Over),
                    },
                    Update::Failed(error) => {
                        (json!(OpenAiError(job_failure(&error)).body()), Phase::Over)
                    }
                },
                Phase::Finishing(last) => (last, Phase::Finished),
                Phase::Finished => return Some((data_event("[DONE]".into()), Phase::Over)),
                Phase::Over => return None,
            };
            Some((data_event(data.to_string()), next))
        }
    });
    let Some(slot) = slot else {
        return Err(ApiError::internal("a stream without its slot").into());
    };
    Ok((job_header(job_id), sse_response(&state, slot, events)).into_response())
}

/// An entry of `GET /v1/models`: a task of the routing table, as `model` names it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// The task (`chat`); `xenios/<task>` names it too.
    id: String,
    object: &'static str,
    /// Unknown for a task: 0.
    created: i64,
    owned_by: &'static str,
}

impl Model {
    fn new(task: &str) -> Model {
        Model {
            id: task.to_owned(),
            object: "model",
            created: 0,
            owned_by: "xenios",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    object: &'static str,
    data: Vec<Model>,
}

/// The models `/v1/chat/completions` takes: the tasks of the routing table. Clients that pick a
/// model from this list (the SDKs' `models.list()`, chat front ends) find them here.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    security(("bearer" = []), ("api_key" = [], "bearer" = [])),
    responses((status = 200, body = ModelList), (status = 401, body = OpenAiErrorBody)))]
pub async fn list_models(State(state): State<AppState>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list",
        data: state
            .settings
            .llm
            .tasks
            .keys()
            .map(|t| Model::new(t))
            .collect(),
    })
}

/// One model (task), as `/v1/chat/completions` takes its name: `chat` or `xenios/chat`.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    security(("bearer" = []), ("api_key" = [], "bearer" = [])),
    params(("model" = String, Path)),
    responses((status = 200, body = Model), (status = 401, body = OpenAiErrorBody),
               (status = 404, body = OpenAiErrorBody)))]
pub async fn get_model(
    State(state): State<AppState>,
    OpenAiPath(model): OpenAiPath<String>,
) -> Result<axum::Json<Model>, OpenAiError> {
    match task_of(&model, &state.settings.llm) {
        Some(task) => Ok(axum::Json(Model::new(task))),
        None => Err(ApiError::NotFound(format!("no model `{model}`")).into()),
    }
}

/// The answer's tool calls as one chunk's delta, each with its `index` (the calls are not
/// streamed: each arrives whole, in the one fragment an SDK accumulates).
fn tool_calls_delta(calls: &[ToolCallBody]) -> Option<Value> {
    if calls.is_empty() {
        return None;
    }
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut call = json!(call);
            call["index"] = index.into();
            call
        })
        .collect();
    Some(json!({ "tool_calls": calls }))
}

enum Phase {
    Start(LlmCall),
    Running(LlmCall),
    /// The tool calls are out; this last chunk follows.
    Finishing(Value),
    /// The last chunk is out; `[DONE]` follows.
    Finished,
    Over,
}

fn data_event(data: String) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_body_fields_are_named_as_the_request_names_them() {
        // Message 0: pictures from parts 1 and 3; message 1: none; message 2: one from part 0.
        let parts = PictureParts(vec![
            vec![(1, "image_url"), (3, "file")],
            vec![],
            vec![(0, "file")],
        ]);
        for (field, named) in [
            ("task", "model"),
            (
                "messages[0].images[1].file_id",
                "messages[0].content[3].file",
            ),
            (
                "messages[0].images[0].url",
                "messages[0].content[1].image_url",
            ),
            ("messages[2].images[0]", "messages[2].content[0].file"),
            ("messages[1].content", "messages[1].content"),
            ("messages[0].images", "messages[0].images"),
            (
                "messages[1].images[0].file_id",
                "messages[1].images[0].file_id",
            ),
            ("max_tokens", "max_tokens"),
        ] {
            assert_eq!(parts.request_field(field), named, "{field}");
        }

        let refused = ApiError::invalid_field("messages[0].images[1].file_id", "no file `x`")
            .renaming_fields(|field| parts.request_field(field));
        let ApiError::InvalidInput {
            message, details, ..
        } = refused
        else {
            panic!("not an invalid input");
        };
        assert_eq!(message, "messages[0].content[3].file: no file `x`");
        assert_eq!(details.unwrap()[0]["field"], "messages[0].content[3].file");
    }
}
