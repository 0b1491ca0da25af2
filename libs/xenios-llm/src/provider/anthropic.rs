//! Anthropic's Messages API: the system prompt apart, strictly alternating turns, and a
//! stream of typed events.
use serde_json::{json, Value};

use super::{error_text, CallSpec, Parsed, Step};
use crate::sse::SseEvent;
use crate::{FinishReason, Role, Usage};

/// Anthropic accepts temperatures up to 1.
const MAX_TEMPERATURE: f64 = 1.0;

pub(super) fn body(spec: &CallSpec<'_>) -> Value {
    let system: Vec<&str> = spec
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .chain(spec.instruction)
        .collect();
    // Consecutive messages of one role become one turn.
    let mut turns: Vec<(Role, String)> = Vec::new();
    for m in spec.messages.iter().filter(|m| m.role != Role::System) {
        match turns.last_mut() {
            Some((role, text)) if *role == m.role => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turns.push((m.role, m.content.clone())),
        }
    }
    let last = turns.len().saturating_sub(1);
    let messages: Vec<Value> = turns
        .into_iter()
        .enumerate()
        .map(|(i, (role, content))| {
            // The last turn's mark caches the whole conversation: the next turn, which sends it
            // again, reads it from the cache.
            // Anthropic refuses a mark on an empty block.
            let content = match spec.prompt_cache && i == last && !content.is_empty() {
                true => cached_text(content),
                false => content.into(),
            };
            json!({"role": role.as_str(), "content": content})
        })
        .collect();
    let mut body = json!({
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "messages": messages,
        "temperature": spec.temperature.min(MAX_TEMPERATURE),
    });
    if !system.is_empty() {
        let system = system.join("\n\n");
        body["system"] = match spec.prompt_cache && !system.is_empty() {
            true => cached_text(system),
            false => system.into(),
        };
    }
    if !spec.stop.is_empty() {
        body["stop_sequences"] = spec.stop.into();
    }
    // Anthropic asks for one of the two to be altered, not both, and its newer models refuse
    // both: a request's `top_p` replaces the temperature. It has no seed or penalties.
    if let Some(top_p) = spec.sampling.top_p {
        body["top_p"] = top_p.into();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("temperature");
        }
    }
    if spec.stream {
        body["stream"] = true.into();
    }
    body
}

/// Text as a one-block list whose block ends a prefix for the prompt cache: the cache holds
/// everything up to and including it.
pub(super) fn cached_text(text: impl Into<String>) -> Value {
    json!([{"type": "text", "text": text.into(), "cache_control": {"type": "ephemeral"}}])
}

/// Input tokens count cache writes and reads too: they are billed. A `message_delta` may
/// repeat the input counts, or not the cache's.
fn absorb(usage: &mut Usage, wire: &Value) {
    let field = |name| wire.get(name).and_then(Value::as_u64);
    if let Some(written) = field("cache_creation_input_tokens") {
        usage.cache_write_tokens = written;
    }
    if let Some(read) = field("cache_read_input_tokens") {
        usage.cache_read_tokens = read;
    }
    if let Some(input) = field("input_tokens") {
        usage.input_tokens = input
            .saturating_add(usage.cache_write_tokens)
            .saturating_add(usage.cache_read_tokens);
    }
    // Cumulative in `message_delta`, so it replaces.
    if let Some(output) = field("output_tokens") {
        usage.output_tokens = output;
    }
}

pub(super) fn parse(body: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    if let Some(error) = v.get("error") {
        return Err(error_text(error));
    }
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the answer has no content")?;
    let content = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let mut usage = Usage::default();
    if let Some(wire) = v.get("usage") {
        absorb(&mut usage, wire);
    }
    let finish_reason = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(FinishReason::from_anthropic)
        .unwrap_or_default();
    Ok(Parsed {
        content,
        usage,
        cost_usd: None,
        finish_reason,
    })
}

/// `message_start`, `content_block_start`, `content_block_delta`…, `content_block_stop`,
/// `message_delta` (usage, `stop_reason`), `message_stop`; `ping` and `error` anywhere.
#[derive(Default)]
pub(super) struct Decoder {
    pub usage: Usage,
    pub finish_reason: Option<FinishReason>,
}

impl Decoder {
    pub fn feed(&mut self, event: &SseEvent) -> Result<Step, String> {
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| format!("unreadable stream event: {e}"))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        Ok(match kind {
            "message_start" => {
                if let Some(wire) = v.pointer("/message/usage") {
                    absorb(&mut self.usage, wire);
                }
                Step::Skip
            }
            "content_block_delta"
                if v.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
            {
                let text = v.pointer("/delta/text").and_then(Value::as_str);
                Step::Text(text.unwrap_or_default().to_owned())
            }
            "message_delta" => {
                if let Some(wire) = v.get("usage") {
                    absorb(&mut self.usage, wire);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(FinishReason::from_anthropic(reason));
                }
                Step::Skip
            }
            "message_stop" => Step::Done,
            "error" => return Err(error_text(v.get("error").unwrap_or(&v))),
            // ping, block boundaries, thinking and tool deltas, event types added later.
            _ => Step::Skip,
        })
    }
}
