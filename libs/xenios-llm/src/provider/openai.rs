//! OpenAI chat completions, as OpenAI, OpenRouter, vLLM, Ollama and llama.cpp serve them.
use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic::cached_text;
use super::{error_text, CallSpec, Parsed, Step};
use crate::sse::SseEvent;
use crate::{FinishReason, Role, Usage};

/// `mark_cache`: Anthropic's cache marks, as OpenRouter passes them on to Claude models: on the
/// last system message and on the last message (see `anthropic::body`).
pub(super) fn body(spec: &CallSpec<'_>, ask_usage: bool, mark_cache: bool) -> Value {
    let last = spec.messages.len().saturating_sub(1);
    let last_system = spec.messages.iter().rposition(|m| m.role == Role::System);
    let messages: Vec<Value> = spec
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let marked = i == last || Some(i) == last_system;
            let content = match mark_cache && marked && !m.content.is_empty() {
                true => cached_text(m.content.as_str()),
                false => m.content.as_str().into(),
            };
            json!({"role": m.role.as_str(), "content": content})
        })
        .collect();
    let mut body = json!({
        "model": spec.model,
        "messages": messages,
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
    });
    if let Some(rf) = spec.response_format {
        body["response_format"] = rf.clone();
    }
    if !spec.stop.is_empty() {
        body["stop"] = spec.stop.into();
    }
    let sampling = spec.sampling;
    if let Some(top_p) = sampling.top_p {
        body["top_p"] = top_p.into();
    }
    if let Some(seed) = sampling.seed {
        body["seed"] = seed.into();
    }
    if let Some(penalty) = sampling.presence_penalty {
        body["presence_penalty"] = penalty.into();
    }
    if let Some(penalty) = sampling.frequency_penalty {
        body["frequency_penalty"] = penalty.into();
    }
    if spec.stream {
        body["stream"] = true.into();
        body["stream_options"] = json!({"include_usage": true});
    }
    if ask_usage {
        body["usage"] = json!({"include": true});
    }
    body
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    /// OpenRouter's, in USD.
    cost: Option<f64>,
    prompt_tokens_details: Option<PromptTokensDetails>,
}

/// Of `prompt_tokens`: OpenAI's `cached_tokens` (read from its cache), and OpenRouter's
/// `cache_write_tokens` (written to Anthropic's).
#[derive(Deserialize)]
struct PromptTokensDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        let details = self.prompt_tokens_details.as_ref();
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cache_read_tokens: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_tokens: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
        }
    }
}

pub(super) fn parse(body: &[u8]) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Completion {
        #[serde(default)]
        choices: Vec<Choice>,
        usage: Option<WireUsage>,
        error: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: ChoiceMessage,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct ChoiceMessage {
        content: Option<String>,
    }
    let completion: Completion =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    // OpenRouter reports some upstream failures with status 200.
    if let Some(error) = completion.error {
        return Err(error_text(&error));
    }
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("the answer has no choices")?;
    Ok(Parsed {
        finish_reason: choice
            .finish_reason
            .as_deref()
            .map(FinishReason::from_openai)
            .unwrap_or_default(),
        content: choice.message.content.unwrap_or_default(),
        usage: completion
            .usage
            .as_ref()
            .map(WireUsage::usage)
            .unwrap_or_default(),
        cost_usd: completion.usage.and_then(|u| u.cost),
    })
}

/// `data: {chunk}` … `data: [DONE]`; the usage arrives in a last chunk without choices.
#[derive(Default)]
pub(super) struct Decoder {
    pub usage: Usage,
    pub cost: Option<f64>,
    /// Set once a choice carries its `finish_reason`.
    pub finish_reason: Option<FinishReason>,
}

impl Decoder {
    pub fn feed(&mut self, event: &SseEvent) -> Result<Step, String> {
        #[derive(Deserialize)]
        struct Chunk {
            #[serde(default)]
            choices: Vec<ChunkChoice>,
            usage: Option<WireUsage>,
            error: Option<Value>,
        }
        #[derive(Deserialize)]
        struct ChunkChoice {
            delta: Option<Delta>,
            finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct Delta {
            content: Option<String>,
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Step::Done);
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|e| format!("unreadable stream chunk: {e}"))?;
        if let Some(error) = chunk.error {
            return Err(error_text(&error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.usage();
            self.cost = usage.cost.or(self.cost);
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(Step::Skip);
        };
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(FinishReason::from_openai(reason));
        }
        Ok(choice
            .delta
            .and_then(|d| d.content)
            .map_or(Step::Skip, Step::Text))
    }
}
