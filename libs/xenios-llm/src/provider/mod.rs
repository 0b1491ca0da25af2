//! The providers behind one interface: [`Provider::call`] sends one request in the provider's
//! own wire format and reads the answer, whole or streamed.
//!
//! | name | wire | default base | model sent |
//! |---|---|---|---|
//! | `openrouter` | OpenAI chat completions, `HTTP-Referer`/`X-Title` | `https://openrouter.ai/api/v1` | as written (`vendor/model`) |
//! | `anthropic` | Messages API | `https://api.anthropic.com` | without an `anthropic/` prefix |
//! | `openai` | OpenAI chat completions | `https://api.openai.com/v1` | without an `openai/` prefix |
//! | any `providers.extra` name | OpenAI chat completions | its `base_url` (required) | as written |
mod anthropic;
mod openai;

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use xenios_config::{LlmSettings, ProviderSettings};

use crate::retry::retry_after;
use crate::sse::{SseError, SseEvent, SseReader};
use crate::stream::Piece;
use crate::{
    FinishReason, LlmError, Message, Sampling, Tool, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

/// The most of an error answer read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a provider's error message kept.
const MAX_ERROR_TEXT: usize = 500;
/// How long a finished stream's body is given to end (it normally follows the last event at
/// once); past it the connection is closed rather than kept.
const BODY_END_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
pub(crate) struct Provider {
    pub name: String,
    wire: Wire,
    base_url: String,
    /// The header carrying the key, marked sensitive so it never shows in debug output.
    auth: Option<(HeaderName, HeaderValue)>,
    /// The variable to set, when the provider's public endpoint is used without a key.
    missing_key: Option<&'static str>,
    model_prefix: Option<&'static str>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// OpenRouter reports each call's cost when asked.
    ask_usage: bool,
}

/// One call as the gateway decided it.
pub(crate) struct CallSpec<'a> {
    /// As sent upstream (see [`Provider::wire_model`]).
    pub model: &'a str,
    pub messages: &'a [Message],
    pub temperature: f64,
    pub max_tokens: u32,
    pub stop: &'a [String],
    pub sampling: Sampling,
    /// Passed through to OpenAI-compatible providers.
    pub response_format: Option<&'a Value>,
    /// The same demand in words, for providers without `response_format` (or that may drop it;
    /// see `Provider::states_format_in_words`).
    pub instruction: Option<&'a str>,
    pub stream: bool,
    /// The task asks for the prompt to be cached (see `TaskSettings::prompt_cache`).
    pub prompt_cache: bool,
    /// With `tool_choice` and `parallel_tool_calls`, sent only when there are some.
    pub tools: &'a [Tool],
    pub tool_choice: Option<&'a ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The whole answer; for a stream, its first token.
    pub timeout: Duration,
    /// Between two events of a stream once text flows.
    pub idle: Duration,
    pub max_body: usize,
    pub max_line: usize,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// As the provider reported it.
    pub cost_usd: Option<f64>,
    pub ttft: Option<Duration>,
    pub finish_reason: FinishReason,
}

/// What a failed call means for the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Worth another try on the same candidate.
    Transient,
    /// This candidate cannot serve (no key, refused key, unknown model); the next may.
    Unusable,
    /// The request itself is wrong; no candidate will take it.
    Rejected,
    /// Text already reached the caller, or the call was cancelled: nothing can be tried again.
    Interrupted,
}

/// How a call ended, as the `outcome` label of `xenios_llm_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    RateLimited,
    ServerError,
    Timeout,
    Connection,
    BadResponse,
    Unusable,
    Rejected,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Connection => "connection_error",
            Outcome::BadResponse => "bad_response",
            Outcome::Unusable => "unusable",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
pub(crate) struct CallError {
    pub failure: Failure,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// What a broken or cancelled call had used.
    pub usage: Usage,
    pub ttft: Option<Duration>,
}

impl CallError {
    fn new(failure: Failure, outcome: Outcome, message: impl Into<String>) -> Self {
        CallError {
            failure,
            outcome,
            status: None,
            message: message.into(),
            retry_after: None,
            usage: Usage::default(),
            ttft: None,
        }
    }

    fn timeout(after: Duration, what: &str) -> Self {
        CallError::new(
            Failure::Transient,
            Outcome::Timeout,
            format!("no {what} within {} ms", after.as_millis()),
        )
    }

    fn bad_response(message: impl Into<String>) -> Self {
        CallError::new(Failure::Transient, Outcome::BadResponse, message)
    }

    fn transport(e: reqwest::Error) -> Self {
        let outcome = if e.is_timeout() {
            Outcome::Timeout
        } else {
            Outcome::Connection
        };
        // Base URLs are configuration, not news; the cause (refused, reset, TLS) is in the
        // chain under reqwest's generic message.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        CallError::new(Failure::Transient, outcome, message)
    }

    /// The error in the caller's terms.
    pub fn into_llm_error(self, provider: &str, model: &str) -> LlmError {
        let (provider, model) = (provider.to_owned(), model.to_owned());
        match (self.failure, self.outcome) {
            (_, Outcome::Cancelled) => LlmError::Cancelled,
            (Failure::Rejected, _) => LlmError::Rejected {
                provider,
                model,
                status: self.status.unwrap_or_default(),
                message: self.message,
            },
            (Failure::Interrupted, _) => LlmError::Interrupted {
                provider,
                model,
                message: self.message,
            },
            (_, Outcome::Timeout) => LlmError::Timeout {
                provider,
                model,
                message: self.message,
            },
            (failure, _) => LlmError::Provider {
                provider,
                model,
                message: match self.status {
                    Some(status) => format!("HTTP {status}: {}", self.message),
                    None => self.message,
                },
                retryable: failure == Failure::Transient,
                retry_after: self.retry_after,
            },
        }
    }
}

/// What a call has had so far, kept outside its future so that a cancelled call can still say
/// what it used.
#[derive(Default)]
struct Progress {
    status: Option<u16>,
    usage: Usage,
    ttft: Option<Duration>,
    /// Text and tool-call pieces of a streamed answer.
    pieces: u64,
}

impl Progress {
    fn received(&mut self, started: Instant) {
        self.ttft.get_or_insert_with(|| started.elapsed());
        self.pieces += 1;
    }

    /// A provider that has answered bills what it made even though the caller left. Streams
    /// report their usage only at the end (Anthropic its input at the start), so what is not
    /// reported yet is estimated: the prompt from its text, the output from the pieces
    /// received (about a token each).
    fn cancelled(self, spec: &CallSpec<'_>) -> CallError {
        let mut usage = self.usage;
        let mut estimated_from = Vec::new();
        let answered = self.status.is_some_and(|s| (200..300).contains(&s));
        if answered && usage.input_tokens == 0 {
            usage.input_tokens = estimated_prompt_tokens(spec);
            estimated_from.push("the prompt".to_owned());
        }
        if self.pieces > usage.output_tokens {
            usage.output_tokens = self.pieces;
            estimated_from.push(match self.pieces {
                1 => "the 1 piece received".to_owned(),
                n => format!("the {n} pieces received"),
            });
        }
        let message = match estimated_from.is_empty() {
            true => "cancelled".to_owned(),
            false => format!(
                "cancelled; usage estimated from {}",
                estimated_from.join(" and ")
            ),
        };
        CallError {
            status: self.status,
            usage,
            ttft: self.ttft,
            ..CallError::new(Failure::Interrupted, Outcome::Cancelled, message)
        }
    }
}

/// About 4 bytes of text a token. Pictures are left out: their base64 is not text, and what
/// one costs depends on the provider and its size.
fn estimated_prompt_tokens(spec: &CallSpec<'_>) -> u64 {
    let calls = spec
        .messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| c.function.name.len() + c.function.arguments.len());
    let tools = match spec.tools.is_empty() {
        true => 0,
        false => serde_json::to_string(spec.tools).map_or(0, |t| t.len()),
    };
    let format = spec.response_format.map_or(0, |f| f.to_string().len());
    let bytes: usize = spec
        .messages
        .iter()
        .map(|m| m.content.len())
        .chain(calls)
        .chain(spec.instruction.map(str::len))
        .chain([tools, format])
        .sum();
    u64::try_from(bytes).unwrap_or(u64::MAX).div_ceil(4)
}

/// Incremental reading of a streamed answer in one wire format.
enum Decoder {
    OpenAi(openai::Decoder),
    Anthropic(anthropic::Decoder),
}

pub(crate) enum Step {
    Text(String),
    Skip,
    Done,
}

impl Decoder {
    fn feed(&mut self, event: &SseEvent) -> Result<Step, String> {
        match self {
            Decoder::OpenAi(d) => d.feed(event),
            Decoder::Anthropic(d) => d.feed(event),
        }
    }

    fn usage(&self) -> Usage {
        match self {
            Decoder::OpenAi(d) => d.usage,
            Decoder::Anthropic(d) => d.usage,
        }
    }

    fn cost(&self) -> Option<f64> {
        match self {
            Decoder::OpenAi(d) => d.cost,
            Decoder::Anthropic(_) => None,
        }
    }

    /// The pieces of tool calls the last event gave.
    fn tool_call_deltas(&mut self) -> Vec<ToolCallDelta> {
        match self {
            Decoder::OpenAi(d) => std::mem::take(&mut d.deltas),
            Decoder::Anthropic(d) => std::mem::take(&mut d.deltas),
        }
    }

    /// Whole, once the stream has ended.
    fn tool_calls(&mut self) -> Vec<ToolCall> {
        match self {
            Decoder::OpenAi(d) => d.tool_calls(),
            Decoder::Anthropic(d) => d.tool_calls(),
        }
    }

    /// As the stream said; a stream that never said counts as `stop`.
    fn finish_reason(&self) -> FinishReason {
        match self {
            Decoder::OpenAi(d) => d.finish_reason,
            Decoder::Anthropic(d) => d.finish_reason,
        }
        .unwrap_or_default()
    }

    /// Whether a body that ends here has said all it had to say (some OpenAI-compatible
    /// servers close after the finishing chunk without `[DONE]`).
    fn complete_at_end(&self) -> bool {
        match self {
            Decoder::OpenAi(d) => d.finish_reason.is_some(),
            Decoder::Anthropic(_) => false,
        }
    }
}

/// An answer parsed whole.
pub(crate) struct Parsed {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub finish_reason: FinishReason,
}

impl Provider {
    /// `name` is `openrouter`, `anthropic`, `openai`, or a name from `providers.extra`.
    pub fn new(
        name: &str,
        settings: &ProviderSettings,
        llm: &LlmSettings,
    ) -> Result<Provider, LlmError> {
        let (wire, default_base, key_var, model_prefix) = match name {
            "openrouter" => (
                Wire::OpenAi,
                Some("https://openrouter.ai/api/v1"),
                "OPENROUTER_API_KEY",
                None,
            ),
            "anthropic" => (
                Wire::Anthropic,
                Some("https://api.anthropic.com"),
                "ANTHROPIC_API_KEY",
                Some("anthropic/"),
            ),
            "openai" => (
                Wire::OpenAi,
                Some("https://api.openai.com/v1"),
                "OPENAI_API_KEY",
                Some("openai/"),
            ),
            _ => (Wire::OpenAi, None, "", None),
        };
        let base_url = match (&settings.base_url, default_base) {
            (Some(url), _) => url.trim().trim_end_matches('/').to_owned(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                return Err(LlmError::Config(format!(
                    "providers.extra.{name}.base_url: required for an LLM provider"
                )))
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "the base URL of provider `{name}` must be an http(s) URL"
            )));
        }
        let key = settings
            .api_key
            .as_ref()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty());
        let auth = match key {
            None => None,
            Some(key) => {
                let (header, value) = match wire {
                    Wire::OpenAi => (AUTHORIZATION, format!("Bearer {key}")),
                    Wire::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    LlmError::Config(format!(
                        "the API key of provider `{name}` is not a valid header value"
                    ))
                })?;
                value.set_sensitive(true);
                Some((header, value))
            }
        };
        // A local server needs no key; the public endpoints always do.
        let missing_key =
            (auth.is_none() && default_base == Some(base_url.as_str())).then_some(key_var);
        let mut extra_headers = Vec::new();
        if wire == Wire::Anthropic {
            extra_headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static("2023-06-01"),
            ));
        }
        if name == "openrouter" {
            let header = |name: &'static str, value: &str| {
                HeaderValue::from_str(value)
                    .map(|v| (HeaderName::from_static(name), v))
                    .map_err(|_| LlmError::Config(format!("llm: `{value}` is not a header value")))
            };
            if let Some(referer) = &llm.openrouter_referer {
                extra_headers.push(header("http-referer", referer)?);
            }
            extra_headers.push(header("x-title", &llm.openrouter_title)?);
        }
        Ok(Provider {
            name: name.to_owned(),
            wire,
            base_url,
            auth,
            missing_key,
            model_prefix,
            extra_headers,
            ask_usage: name == "openrouter",
        })
    }

    /// The model id as this provider knows it.
    pub fn wire_model<'m>(&self, model: &'m str) -> &'m str {
        self.model_prefix
            .and_then(|p| model.strip_prefix(p))
            .unwrap_or(model)
    }

    /// Whether an OpenAI-wire request carries Anthropic's cache marks: only OpenRouter passes
    /// them on, and only Claude models take them (other models cache by themselves, and a
    /// strict OpenAI-compatible server could refuse the unknown field).
    fn marks_cache(&self, spec: &CallSpec<'_>) -> bool {
        spec.prompt_cache && self.name == "openrouter" && spec.model.starts_with("anthropic/")
    }

    /// Whether `response_format` is understood natively (else the instruction goes in the
    /// prompt).
    pub fn takes_response_format(&self) -> bool {
        self.wire == Wire::OpenAi
    }

    /// Whether the demanded format also goes in the prompt, in words: where there is no
    /// `response_format`, and on OpenRouter, which passes it only to the models that take it
    /// and silently drops it for the rest (Claude among them).
    pub fn states_format_in_words(&self) -> bool {
        !self.takes_response_format() || self.name == "openrouter"
    }

    /// Whether this provider's wire can carry the conversation; what it cannot is the
    /// caller's error (an OpenAI-compatible server takes anything the input allows).
    pub fn check(&self, messages: &[Message]) -> Result<(), String> {
        match self.wire {
            Wire::OpenAi => Ok(()),
            Wire::Anthropic => anthropic::check(messages),
        }
    }

    /// Sends one request and reads its answer. Tokens of a streamed answer go to `tokens` as
    /// they arrive. Cancelling `cancel` ends the call at once as [`Outcome::Cancelled`] with
    /// what it had used. Either way of ending it early, cancelling or dropping this future,
    /// closes the connection, which is how the provider's generation stops.
    pub async fn call(
        &self,
        http: &Client,
        spec: &CallSpec<'_>,
        limits: &Limits,
        tokens: Option<&mpsc::Sender<Piece>>,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        let mut progress = Progress::default();
        let exchange = self.exchange(http, spec, limits, tokens, &mut progress);
        let reply = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            reply = exchange => Some(reply),
        };
        reply.unwrap_or_else(|| Err(progress.cancelled(spec)))
    }

    async fn exchange(
        &self,
        http: &Client,
        spec: &CallSpec<'_>,
        limits: &Limits,
        tokens: Option<&mpsc::Sender<Piece>>,
        progress: &mut Progress,
    ) -> Result<Reply, CallError> {
        if let Some(var) = self.missing_key {
            return Err(CallError::new(
                Failure::Unusable,
                Outcome::Unusable,
                format!("no API key configured ({var})"),
            ));
        }
        let started = Instant::now();
        let deadline = started + limits.timeout;
        let body = match self.wire {
            Wire::OpenAi => openai::body(spec, self.ask_usage, self.marks_cache(spec)),
            // The gateway checked the conversation (`check`) before any call.
            Wire::Anthropic => anthropic::body(spec)
                .map_err(|e| CallError::new(Failure::Rejected, Outcome::Rejected, e))?,
        };
        let url = match self.wire {
            Wire::OpenAi => format!("{}/chat/completions", self.base_url),
            Wire::Anthropic => format!("{}/v1/messages", self.base_url),
        };
        let mut request = http.post(url).json(&body);
        for (name, value) in self.auth.iter().chain(&self.extra_headers) {
            request = request.header(name, value);
        }
        if spec.stream {
            request = request.header("accept", "text/event-stream");
        }
        let response = match timeout_at(deadline, request.send()).await {
            Err(_) => return Err(CallError::timeout(limits.timeout, "answer")),
            Ok(Err(e)) => return Err(CallError::transport(e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        progress.status = Some(status.as_u16());
        if !status.is_success() {
            return Err(failure(response, deadline).await);
        }
        if spec.stream {
            self.read_stream(response, started, deadline, limits, tokens, progress)
                .await
        } else {
            let read = async {
                let body = read_limited(response, limits.max_body).await?;
                match self.wire {
                    Wire::OpenAi => openai::parse(&body),
                    Wire::Anthropic => anthropic::parse(&body),
                }
                .map_err(CallError::bad_response)
            };
            let parsed = timeout_at(deadline, read)
                .await
                .map_err(|_| CallError::timeout(limits.timeout, "answer"))??;
            Ok(Reply {
                status: status.as_u16(),
                content: parsed.content,
                tool_calls: parsed.tool_calls,
                usage: parsed.usage,
                cost_usd: parsed.cost_usd,
                ttft: None,
                finish_reason: parsed.finish_reason,
            })
        }
    }

    async fn read_stream(
        &self,
        response: Response,
        started: Instant,
        deadline: Instant,
        limits: &Limits,
        tokens: Option<&mpsc::Sender<Piece>>,
        progress: &mut Progress,
    ) -> Result<Reply, CallError> {
        let status = response.status().as_u16();
        let mut events = SseReader::new(response.bytes_stream(), limits.max_line, limits.max_body);
        let mut decoder = match self.wire {
            Wire::OpenAi => Decoder::OpenAi(openai::Decoder::default()),
            Wire::Anthropic => Decoder::Anthropic(anthropic::Decoder::default()),
        };
        let mut content = String::new();
        loop {
            let (until, limit, what) = match progress.ttft {
                None => (deadline, limits.timeout, "first token"),
                Some(_) => (Instant::now() + limits.idle, limits.idle, "stream data"),
            };
            let step = match timeout_at(until, events.next()).await {
                Err(_) => Err(CallError::timeout(limit, what)),
                Ok(Err(SseError::Transport(e))) => Err(CallError::transport(e)),
                // Another try would meet the same limit.
                Ok(Err(e @ (SseError::TooLarge(_) | SseError::LineTooLong(_)))) => Err(
                    CallError::new(Failure::Unusable, Outcome::BadResponse, e.to_string()),
                ),
                Ok(Err(e)) => Err(CallError::bad_response(e.to_string())),
                Ok(Ok(None)) if decoder.complete_at_end() => Ok(Step::Done),
                Ok(Ok(None)) => Err(CallError::bad_response(
                    "the stream ended before the answer was complete",
                )),
                Ok(Ok(Some(event))) => decoder.feed(&event).map_err(CallError::bad_response),
            };
            progress.usage = decoder.usage();
            for delta in decoder.tool_call_deltas() {
                progress.received(started);
                if let Some(tokens) = tokens {
                    let _ = tokens.send(Piece::ToolCall(Box::new(delta))).await;
                }
            }
            match step {
                Ok(Step::Text(text)) if !text.is_empty() => {
                    progress.received(started);
                    content.push_str(&text);
                    if let Some(tokens) = tokens {
                        // The receiver lives as long as this future; a full channel is the
                        // caller's backpressure.
                        let _ = tokens.send(Piece::Text(text)).await;
                    }
                }
                Ok(Step::Text(_) | Step::Skip) => {}
                Ok(Step::Done) => {
                    // The answer is whole; the body's end may come in a later write. Read
                    // aside, it lets the connection go back to the pool without holding up
                    // the result: a new connection would cost the next call a TLS handshake.
                    tokio::spawn(events.finish(BODY_END_WAIT));
                    break;
                }
                Err(mut e) => {
                    e.status = Some(status);
                    e.usage = decoder.usage();
                    e.ttft = progress.ttft;
                    if e.ttft.is_some() && tokens.is_some() {
                        e.failure = Failure::Interrupted;
                    }
                    return Err(e);
                }
            }
        }
        Ok(Reply {
            status,
            content,
            tool_calls: decoder.tool_calls(),
            usage: decoder.usage(),
            cost_usd: decoder.cost(),
            ttft: progress.ttft,
            finish_reason: decoder.finish_reason(),
        })
    }
}

/// A non-2xx answer, classified: 429, 408 and 5xx are worth retrying; 401, 402, 403 and 404
/// mean this candidate cannot serve (a refused key or an unknown model on one provider says
/// nothing about the next); any other 4xx is about the request itself.
async fn failure(response: Response, deadline: Instant) -> CallError {
    let status = response.status();
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let (failure, outcome) = match status {
        StatusCode::TOO_MANY_REQUESTS => (Failure::Transient, Outcome::RateLimited),
        StatusCode::REQUEST_TIMEOUT => (Failure::Transient, Outcome::Timeout),
        s if s.is_server_error() => (Failure::Transient, Outcome::ServerError),
        StatusCode::UNAUTHORIZED
        | StatusCode::PAYMENT_REQUIRED
        | StatusCode::FORBIDDEN
        | StatusCode::NOT_FOUND => (Failure::Unusable, Outcome::Unusable),
        s if s.is_client_error() => (Failure::Rejected, Outcome::Rejected),
        _ => (Failure::Unusable, Outcome::BadResponse),
    };
    let message = match timeout_at(deadline, read_limited(response, MAX_ERROR_BODY)).await {
        Ok(Ok(body)) => body_message(&body),
        _ => String::new(),
    };
    let message = match message.is_empty() {
        true => status.canonical_reason().unwrap_or("error").to_owned(),
        false => message,
    };
    CallError {
        status: Some(status.as_u16()),
        retry_after,
        ..CallError::new(failure, outcome, message)
    }
}

async fn read_limited(response: Response, max: usize) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(CallError::transport)?;
        if body.len() + chunk.len() > max {
            return Err(CallError::new(
                Failure::Unusable,
                Outcome::BadResponse,
                format!("the answer is larger than {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The message of an error answer: `{"error":{"type","message"}}` as OpenAI, OpenRouter and
/// Anthropic send it, else the start of the text.
fn body_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("error").is_some() => error_text(&v["error"]),
        _ => truncate(String::from_utf8_lossy(body).trim()),
    }
}

fn error_text(error: &Value) -> String {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or(error.as_str())
        .unwrap_or("unknown error");
    truncate(&match error.get("type").and_then(Value::as_str) {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_owned(),
    })
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A function for the wires' tests.
#[cfg(test)]
pub(crate) fn test_weather_tool() -> Tool {
    Tool::function(
        "get_weather",
        "The weather in a city",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    )
}

/// A call as the gateway would make it for `messages` and tools, for the wires' tests.
#[cfg(test)]
pub(crate) fn test_spec<'a>(
    messages: &'a [Message],
    tools: &'a [Tool],
    tool_choice: Option<&'a ToolChoice>,
) -> CallSpec<'a> {
    CallSpec {
        model: "m",
        messages,
        temperature: 0.5,
        max_tokens: 100,
        stop: &[],
        sampling: Sampling::default(),
        response_format: None,
        instruction: None,
        stream: false,
        prompt_cache: false,
        tools,
        tool_choice,
        parallel_tool_calls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Image;

    #[test]
    fn a_call_cancelled_after_its_answer_began_estimates_what_was_not_reported() {
        let picture = Image {
            url: format!("data:image/png;base64,{}", "A".repeat(4000)),
            detail: None,
        };
        let messages = [
            Message::system("12345678"),
            Message {
                images: vec![picture],
                ..Message::user("1234")
            },
        ];
        let spec = test_spec(&messages, &[], None);
        let mut progress = Progress {
            status: Some(200),
            ..Progress::default()
        };
        progress.received(Instant::now());
        progress.received(Instant::now());
        let e = progress.cancelled(&spec);
        assert_eq!((e.outcome, e.status), (Outcome::Cancelled, Some(200)));
        // 12 bytes of text; the picture is no text.
        assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (3, 2));
        assert!(e.ttft.is_some());
        assert_eq!(
            e.message,
            "cancelled; usage estimated from the prompt and the 2 pieces received"
        );

        // Reported figures stand; nothing is estimated before the provider answered.
        let reported = Progress {
            status: Some(200),
            usage: Usage {
                input_tokens: 50,
                output_tokens: 9,
                ..Usage::default()
            },
            pieces: 4,
            ..Progress::default()
        };
        let e = reported.cancelled(&spec);
        assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (50, 9));
        assert_eq!(e.message, "cancelled");
        let e = Progress::default().cancelled(&spec);
        assert_eq!(
            (e.usage, e.status, e.message.as_str()),
            (Usage::default(), None, "cancelled")
        );
    }
}
