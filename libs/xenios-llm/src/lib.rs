//! The LLM client of the `xenios-llm` consumer (SPEC §3 "LLM gateway").
//!
//! [`LlmGateway`] answers an [`LlmRequest`] for a *task*. The task's routing comes from
//! [`xenios_config::LlmSettings`]: ordered candidates (provider, model), temperature,
//! max_tokens, streaming, per-try timeout, retries per candidate.
//!
//! **Naming a provider.** A candidate is `{provider, model}`; without a provider it goes to
//! `llm.default_provider` (OpenRouter). OpenRouter takes the model id as written
//! (`anthropic/claude-opus-4-20250514`); the `anthropic` and `openai` providers take it
//! without their own `anthropic/` or `openai/` prefix, so `{provider = "anthropic", model =
//! "anthropic/claude-opus-4-20250514"}` and `"anthropic:claude-opus-4-20250514"` are the same
//! call. Names in `providers.extra` are further OpenAI-compatible servers.
//!
//! **Failures.** Per candidate, 429, 408, 5xx, timeouts, broken connections and garbled
//! answers are retried `retries` times with exponential backoff and jitter, waiting at least
//! a `Retry-After` (seconds or HTTP date) unless it exceeds `llm.retry.max_retry_after_ms`,
//! in which case the candidate is given up at once. Then the next candidate is tried. 401,
//! 402, 403 and 404 skip to the next candidate without retrying: a refused key or an unknown
//! model on one provider says nothing about the next. Any other 4xx (400, 413, 422, …) is the
//! request's own fault and ends the request with `invalid_input`, no fallback. In a stream,
//! fallback happens only before the first token.
//!
//! **Tools.** A request may offer [`Tool`]s in OpenAI's shape; the model's [`ToolCall`]s come
//! back in [`LlmResult::tool_calls`] with [`FinishReason::ToolCalls`], whole even when the text
//! streams. Anthropic's `tool_use`/`tool_result` blocks are translated both ways.
//!
//! **Observation.** Every provider call is told to a [`CallObserver`] (for `inference_logs`)
//! and counted in the SPEC §6 metrics: `xenios_llm_requests_total{task,model,outcome}` (per
//! call; outcome `success`, `rate_limited`, `server_error`, `timeout`, `connection_error`,
//! `bad_response`, `unusable`, `rejected`, `cancelled`), `xenios_llm_tokens_total
//! {task,model,direction}`, `xenios_llm_cost_usd_total{task,model}` (kept as a gauge,
//! `metrics` counters being integers, and exposed as a counter by `xenios_telemetry::render`), `xenios_llm_time_to_first_token_seconds
//! {task,model}` and `xenios_llm_fallbacks_total{task}` (per move to a next candidate). A call
//! cancelled once its provider has answered is recorded with its usage so far, what the
//! provider has not reported yet estimated (and said so in its error), and priced.
//!
//! **The `llm` job kind.** [`LlmHandler`] is the consumer runtime's handler for `jobs.llm`:
//! it streams tokens onto the job's events when the input asks for `stream`, and writes each
//! call record to `inference_logs`.

mod error;
mod format;
mod gateway;
mod handler;
mod provider;
mod retry;
mod sse;
mod stream;
mod types;

pub use error::LlmError;
pub use gateway::LlmGateway;
pub use handler::LlmHandler;
pub use stream::LlmStream;
pub use types::{
    CallObserver, CallRecord, FinishReason, FunctionCall, FunctionDefinition, Image, ImageDetail,
    ImageSource, LlmRequest, LlmResult, Message, Role, Sampling, StreamEvent, Tool, ToolCall,
    ToolCallDelta, ToolChoice, Usage,
};
pub use xenios_config::{Candidate, LlmSettings, ProvidersSettings, TaskSettings};
