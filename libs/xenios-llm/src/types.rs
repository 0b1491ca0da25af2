//! What callers hand in and get back.
use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use xenios_contract::images::{Image, ImageDetail, ImageSource};
pub use xenios_contract::inputs::Sampling;
pub use xenios_contract::tools::{
    FunctionCall, FunctionDefinition, Tool, ToolCall, ToolCallDelta, ToolChoice,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering one of the assistant's calls.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Empty for an assistant message that only calls tools.
    pub content: String,
    /// A user message's pictures, sent before its text (as Anthropic advises).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// The assistant's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// An assistant message that calls tools, after `content` (often empty).
    pub fn tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls: calls,
            ..Message::assistant(content)
        }
    }
    /// The result of the call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }
}

/// The `llm` job input (SPEC §3): deserialize it straight from the command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub task: String,
    pub messages: Vec<Message>,
    /// `{"type":"json_schema","json_schema":{"name","schema",…}}`, `{"type":"json_object"}` or
    /// `{"type":"text"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Overrides the task's value, within `llm.max_tokens_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Overrides the task's value, within 0..=2 (Anthropic is sent at most 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Sequences that end the answer (OpenAI's `stop`, Anthropic's `stop_sequences`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// `top_p`, `seed` and the penalties, passed on as given.
    #[serde(default, flatten)]
    pub sampling: Sampling,
    /// Functions the model may call; sent only when there are some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Sent only with tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Sent only with tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token billed, cached or not.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, those written to the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        // Counts come from providers: a wrong one must not wrap (or panic in a debug build).
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
    }
}

/// Why the model stopped, in OpenAI's words (`finish_reason`); Anthropic's `stop_reason`s
/// are mapped onto them. A caller that sees `length` has a truncated answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer (or a stop sequence did).
    #[default]
    Stop,
    /// `max_tokens` cut the answer short.
    Length,
    /// The provider withheld or cut the answer (OpenAI's `content_filter`, Anthropic's
    /// `refusal`).
    ContentFilter,
    /// The model called tools (Anthropic's `tool_use`): the answer is `tool_calls`.
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
        }
    }

    /// From an OpenAI-compatible `finish_reason` (`function_call` is the legacy name of
    /// `tool_calls`); unknown ones count as `stop`.
    pub(crate) fn from_openai(reason: &str) -> Self {
        match reason {
            "length" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        }
    }

    /// From an Anthropic `stop_reason`.
    pub(crate) fn from_anthropic(reason: &str) -> Self {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
            "refusal" => FinishReason::ContentFilter,
            "tool_use" => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        }
    }
}

/// The `llm` job result (SPEC §3), plus the provider that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmResult {
    pub content: String,
    /// The model id as the routing table names it.
    pub model: String,
    pub provider: String,
    /// The answer came from a candidate after the first.
    pub fallback_used: bool,
    /// Summed over every answered call of the request (JSON-schema re-asks included).
    pub usage: Usage,
    pub latency_ms: u64,
    /// Summed like `usage`; `None` when no call had a known price.
    pub cost_usd: Option<f64>,
    /// The validated JSON value, when a JSON `response_format` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parsed: Option<Value>,
    /// Why the answer ended; results stored before it was recorded read as `stop`.
    #[serde(default)]
    pub finish_reason: FinishReason,
    /// The calls the model made, in its order; absent when none (as in every result stored
    /// before tools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// An item of [`crate::LlmStream`]: text and pieces of tool calls as they arrive, then the
/// result (with the tool calls whole).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Token(String),
    ToolCall(ToolCallDelta),
    Done(LlmResult),
}

/// One provider call (one try), for the audit log (`inference_logs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub task: String,
    pub provider: String,
    /// The model id as the routing table names it.
    pub model: String,
    /// 1 for the first call of a request, counting every retry, fallback and re-ask.
    pub attempt: u32,
    pub streaming: bool,
    /// The provider's HTTP status, when it answered.
    pub status: Option<u16>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, read from and written to the provider's prompt cache.
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub latency_ms: u64,
    /// Streamed calls that produced text only.
    pub ttft_ms: Option<u64>,
    pub cost_usd: Option<f64>,
    pub success: bool,
    pub error: Option<String>,
}

/// Told about every provider call as soon as it ends. Called inline: keep it quick (hand the
/// record to a channel or a buffered writer).
pub trait CallObserver: Send + Sync {
    fn on_call(&self, record: &CallRecord);
}

impl<F: Fn(&CallRecord) + Send + Sync> CallObserver for F {
    fn on_call(&self, record: &CallRecord) {
        self(record)
    }
}
