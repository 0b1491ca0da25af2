//! Anthropic's Messages API: the system prompt apart, strictly alternating turns, and a
//! stream of typed events.
use serde_json::{json, Value};
use xenios_contract::tools::MAX_TOOL_CALLS;

use super::{error_text, CallSpec, Parsed, Step};
use crate::sse::SseEvent;
use crate::{
    FinishReason, Image, ImageSource, Message, Role, Tool, ToolCall, ToolCallDelta, ToolChoice,
    Usage,
};

/// Anthropic accepts temperatures up to 1.
const MAX_TEMPERATURE: f64 = 1.0;

/// Errors only for a request Anthropic cannot be sent (see [`turns`]).
pub(super) fn body(spec: &CallSpec<'_>) -> Result<Value, String> {
    let system: Vec<&str> = spec
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .chain(spec.instruction)
        .collect();
    let turns = turns(spec.messages)?;
    let last = turns.len().saturating_sub(1);
    let messages: Vec<Value> = turns
        .into_iter()
        .enumerate()
        // The last turn's mark caches the whole conversation: the next turn, which sends it
        // again, reads it from the cache.
        .map(|(i, turn)| turn.into_message(spec.prompt_cache && i == last))
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
    if !spec.tools.is_empty() {
        body["tools"] = spec.tools.iter().map(tool).collect();
        if let Some(choice) = tool_choice(spec.tool_choice, spec.parallel_tool_calls) {
            body["tool_choice"] = choice;
        }
    }
    if spec.stream {
        body["stream"] = true.into();
    }
    Ok(body)
}

/// Whether the conversation can be sent to Anthropic: every call's arguments a JSON object
/// (they become `tool_use` inputs). Checked before any call, so a bad request is the caller's
/// error at once and not a failure of one candidate.
pub(super) fn check(messages: &[Message]) -> Result<(), String> {
    // Only the calls' arguments can fail: checked without building the turns, which
    // `body` builds once per call.
    for (i, m) in messages.iter().enumerate() {
        for (j, call) in m.tool_calls.iter().enumerate() {
            call_input(i, j, call)?;
        }
    }
    Ok(())
}

/// The `tool_use` input of call `j` of message `i`.
fn call_input(i: usize, j: usize, call: &ToolCall) -> Result<Value, String> {
    tool_input(&call.function.arguments)
        .map_err(|e| format!("messages[{i}].tool_calls[{j}].function.arguments: {e}"))
}

fn tool(tool: &Tool) -> Value {
    let function = &tool.function;
    // Anthropic requires a schema; OpenAI's functions may omit it when they take nothing.
    let schema = function
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut tool = json!({"name": function.name, "input_schema": schema});
    if let Some(description) = &function.description {
        tool["description"] = description.as_str().into();
    }
    tool
}

fn tool_choice(choice: Option<&ToolChoice>, parallel: Option<bool>) -> Option<Value> {
    let mut choice = match choice {
        None => None,
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if parallel == Some(false) {
        choice.get_or_insert_with(|| json!({"type": "auto"}))["disable_parallel_tool_use"] =
            true.into();
    }
    choice
}

enum Block {
    Text(String),
    Image(Value),
    ToolUse(Value),
    ToolResult(Value),
}

/// One message of Anthropic's strictly alternating conversation.
struct Turn {
    role: &'static str,
    blocks: Vec<Block>,
}

/// The conversation without its system prompt, as Anthropic's turns: consecutive messages of
/// one role make one turn (texts joined by a blank line), the assistant's tool calls become
/// `tool_use` blocks, and tool results `tool_result` blocks of a user turn.
fn turns(messages: &[Message]) -> Result<Vec<Turn>, String> {
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role {
            Role::System => continue,
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        let turn = match turns.last_mut() {
            Some(turn) if turn.role == role => turn,
            _ => {
                turns.push(Turn {
                    role,
                    blocks: Vec::new(),
                });
                turns.last_mut().expect("just pushed")
            }
        };
        if m.role == Role::Tool {
            let id = m.tool_call_id.as_deref().unwrap_or_default();
            let mut result = json!({"type": "tool_result", "tool_use_id": tool_use_id(id)});
            if !m.content.is_empty() {
                result["content"] = m.content.as_str().into();
            }
            // Anthropic wants a turn's results before its text.
            let first_other = turn
                .blocks
                .iter()
                .position(|b| !matches!(b, Block::ToolResult(_)))
                .unwrap_or(turn.blocks.len());
            turn.blocks.insert(first_other, Block::ToolResult(result));
            continue;
        }
        for image in &m.images {
            turn.blocks.push(Block::Image(image_block(image)?));
        }
        match turn.blocks.last_mut() {
            Some(Block::Text(text)) => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turn.blocks.push(Block::Text(m.content.clone())),
        }
        for (j, call) in m.tool_calls.iter().enumerate() {
            let input = call_input(i, j, call)?;
            turn.blocks.push(Block::ToolUse(json!({
                "type": "tool_use", "id": tool_use_id(&call.id),
                "name": call.function.name, "input": input,
            })));
        }
    }
    Ok(turns)
}

impl Turn {
    /// A turn of text alone is a string, as before tools; any other a list of blocks. The
    /// cache mark goes on the last block. Anthropic refuses a mark on an empty block, and
    /// empty text blocks in a list.
    fn into_message(self, mark: bool) -> Value {
        let content = match <[Block; 1]>::try_from(self.blocks) {
            Ok([Block::Text(text)]) => match mark && !text.is_empty() {
                true => cached_text(text),
                false => text.into(),
            },
            Ok(one) => blocks(Vec::from(one), mark),
            Err(many) => blocks(many, mark),
        };
        json!({"role": self.role, "content": content})
    }
}

fn blocks(blocks: Vec<Block>, mark: bool) -> Value {
    let mut list: Vec<Value> = blocks
        .into_iter()
        .filter_map(|block| match block {
            Block::Text(text) if text.is_empty() => None,
            Block::Text(text) => Some(json!({"type": "text", "text": text})),
            Block::ToolUse(block) | Block::ToolResult(block) | Block::Image(block) => Some(block),
        })
        .collect();
    if let (true, Some(last)) = (mark, list.last_mut()) {
        last["cache_control"] = json!({"type": "ephemeral"});
    }
    Value::Array(list)
}

/// A picture as Anthropic's `image` block: by URL, or inline with the type its bytes show.
fn image_block(image: &Image) -> Result<Value, String> {
    let source = match image.source()? {
        ImageSource::Url(url) => json!({"type": "url", "url": url}),
        ImageSource::Inline { media_type, base64 } => {
            json!({"type": "base64", "media_type": media_type, "data": base64})
        }
    };
    Ok(json!({"type": "image", "source": source}))
}

/// A call's arguments as a `tool_use` input: a JSON object (none at all is an empty one).
fn tool_input(arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

/// Anthropic takes ids of `[a-zA-Z0-9_-]`; another provider's (`functions.get:0`) is mapped
/// the same way in the call and in its result, so they still pair.
fn tool_use_id(id: &str) -> String {
    id.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect()
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
    let of_type = |kind: &'static str| {
        blocks
            .iter()
            .filter(move |b| b.get("type").and_then(Value::as_str) == Some(kind))
    };
    let content = of_type("text")
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let tool_calls = of_type("tool_use")
        .map(|b| {
            let text = |field: &str| b.get(field).and_then(Value::as_str).unwrap_or_default();
            let input = b.get("input").map_or_else(|| "{}".into(), Value::to_string);
            ToolCall::new(text("id"), text("name"), input)
        })
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
        tool_calls,
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
    /// `tool_use` blocks: each begins with its id and name (`content_block_start`), its input
    /// arrives as `input_json_delta` pieces of JSON text.
    calls: Vec<StreamedCall>,
    /// The pieces of calls the last event gave, for the reader to pass on.
    pub deltas: Vec<ToolCallDelta>,
}

struct StreamedCall {
    /// The block's index in the message.
    index: Option<u64>,
    id: String,
    name: String,
    input: String,
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
            "content_block_start"
                if v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use") =>
            {
                if self.calls.len() == MAX_TOOL_CALLS {
                    return Err(format!("more than {MAX_TOOL_CALLS} tool calls"));
                }
                let text = |pointer| v.pointer(pointer).and_then(Value::as_str);
                let call = StreamedCall {
                    index: v.get("index").and_then(Value::as_u64),
                    id: text("/content_block/id").unwrap_or_default().to_owned(),
                    name: text("/content_block/name").unwrap_or_default().to_owned(),
                    input: String::new(),
                };
                let ordinal = self.calls.len() as u32;
                self.deltas.push(ToolCallDelta::start(
                    ordinal,
                    call.id.as_str(),
                    call.name.as_str(),
                ));
                self.calls.push(call);
                Step::Skip
            }
            "content_block_delta"
                if v.pointer("/delta/type").and_then(Value::as_str) == Some("input_json_delta") =>
            {
                let index = v.get("index").and_then(Value::as_u64);
                let piece = v.pointer("/delta/partial_json").and_then(Value::as_str);
                let ordinal = self.calls.iter().rposition(|c| c.index == index);
                if let (Some(ordinal), Some(piece)) = (ordinal, piece.filter(|p| !p.is_empty())) {
                    self.calls[ordinal].input.push_str(piece);
                    self.deltas
                        .push(ToolCallDelta::arguments(ordinal as u32, piece));
                }
                Step::Skip
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
            // ping, block boundaries, thinking deltas, event types added later.
            _ => Step::Skip,
        })
    }

    /// The input as the whole answer gives it, compact; JSON text cut short (by `max_tokens`)
    /// as it came.
    pub fn tool_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|call| {
                let input = match call.input.trim() {
                    "" => "{}".to_owned(),
                    text => serde_json::from_str::<Value>(text)
                        .map_or_else(|_| call.input.clone(), |v| v.to_string()),
                };
                ToolCall::new(call.id, call.name, input)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{test_spec, test_weather_tool as weather};

    #[test]
    fn tools_and_choices_become_anthropics() {
        let messages = [Message::user("hi")];
        let tools = [weather()];
        let mut bare = weather();
        bare.function.description = None;
        bare.function.parameters = None;
        let sent = |choice: Option<&ToolChoice>, parallel: Option<bool>| {
            let mut spec = test_spec(&messages, &tools, choice);
            spec.parallel_tool_calls = parallel;
            body(&spec).unwrap()
        };
        let plain = sent(None, None);
        assert_eq!(
            plain["tools"],
            json!([{"name": "get_weather", "description": "The weather in a city",
                    "input_schema": {"type": "object",
                                     "properties": {"city": {"type": "string"}}}}])
        );
        assert!(plain.get("tool_choice").is_none());
        let named = ToolChoice::Function("get_weather".into());
        for (choice, parallel, wire) in [
            (Some(&ToolChoice::Auto), None, json!({"type": "auto"})),
            (Some(&ToolChoice::Required), None, json!({"type": "any"})),
            (Some(&ToolChoice::None), None, json!({"type": "none"})),
            (
                Some(&named),
                None,
                json!({"type": "tool", "name": "get_weather"}),
            ),
            (
                None,
                Some(false),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (
                Some(&ToolChoice::Required),
                Some(false),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                Some(&ToolChoice::None),
                Some(false),
                json!({"type": "none"}),
            ),
            (Some(&ToolChoice::Auto), Some(true), json!({"type": "auto"})),
        ] {
            assert_eq!(sent(choice, parallel)["tool_choice"], wire, "{choice:?}");
        }
        // A function without a schema takes nothing; Anthropic needs the schema said.
        let bare = [bare];
        let body = body(&test_spec(&messages, &bare, Some(&ToolChoice::Auto))).unwrap();
        assert_eq!(
            body["tools"],
            json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}])
        );
        // No tools, no choice.
        let body = super::body(&test_spec(&messages, &[], Some(&ToolChoice::Auto))).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    #[test]
    fn calls_become_tool_use_and_results_one_user_turn() {
        let messages = [
            Message::system("Be brief."),
            Message::user("Weather in Paris and Rome?"),
            Message::tool_calls(
                "Checking both.",
                vec![
                    ToolCall::new("call_1", "get_weather", r#"{"city": "Paris"}"#),
                    // Another provider's id, and no arguments at all.
                    ToolCall::new("functions.get_weather:1", "get_weather", ""),
                ],
            ),
            Message::tool_result("call_1", "18°C"),
            Message::tool_result("functions.get_weather:1", "24°C"),
            Message::user("And tomorrow?"),
        ];
        let tools = [weather()];
        let mut spec = test_spec(&messages, &tools, None);
        spec.prompt_cache = true;
        let body = body(&spec).unwrap();
        let mark = json!({"type": "ephemeral"});
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather",
                     "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "functions_get_weather_1", "name": "get_weather",
                     "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "functions_get_weather_1",
                     "content": "24°C"},
                    {"type": "text", "text": "And tomorrow?", "cache_control": mark},
                ]},
            ])
        );
        assert_eq!(body["system"][0]["text"], "Be brief.");
    }

    #[test]
    fn pictures_become_image_blocks_before_the_text() {
        // A PNG labelled JPEG: Anthropic is told what the bytes are.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB";
        let shown = |text: &str, urls: &[String]| Message {
            images: urls
                .iter()
                .map(|url| Image {
                    url: url.clone(),
                    detail: Some(crate::ImageDetail::High),
                })
                .collect(),
            ..Message::user(text)
        };
        let messages = [
            shown(
                "What is on these?",
                &[
                    "https://example.com/cat.jpg".into(),
                    format!("data:image/jpeg;base64,{png}"),
                ],
            ),
            Message::assistant("A cat and a pixel."),
            Message::user("And this one?"),
            shown("", &["https://example.com/dog.webp".into()]),
        ];
        let mut spec = test_spec(&messages, &[], None);
        spec.prompt_cache = true;
        let body = body(&spec).unwrap();
        let cat = json!({"type": "image", "source": {"type": "url",
                                                     "url": "https://example.com/cat.jpg"}});
        let pixel = json!({"type": "image", "source": {"type": "base64",
                                                       "media_type": "image/png", "data": png}});
        let dog = json!({"type": "image", "source": {"type": "url",
                                                     "url": "https://example.com/dog.webp"}});
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    cat, pixel, {"type": "text", "text": "What is on these?"}]},
                {"role": "assistant", "content": "A cat and a pixel."},
                // Two user messages make one turn; the last block carries the cache mark.
                {"role": "user", "content": [
                    {"type": "text", "text": "And this one?"},
                    {"type": "image", "source": dog["source"],
                     "cache_control": {"type": "ephemeral"}},
                ]},
            ])
        );
    }

    #[test]
    fn results_come_before_text_and_empty_text_is_left_out() {
        let messages = [
            Message::user("Weather?"),
            Message::tool_calls("", vec![ToolCall::new("t1", "get_weather", "{}")]),
            Message::user("(the tool is slow)"),
            Message::tool_result("t1", ""),
        ];
        let body = body(&test_spec(&messages, &[], None)).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1"},
                {"type": "text", "text": "(the tool is slow)"},
            ]})
        );
    }

    #[test]
    fn arguments_that_are_no_json_object_cannot_go_to_anthropic() {
        for (arguments, problem) in [
            ("{\"city\": ", "not valid JSON"),
            ("[1]", "not a JSON object"),
        ] {
            let messages = [
                Message::user("hi"),
                Message::tool_calls("", vec![ToolCall::new("t1", "f", arguments)]),
            ];
            let e = check(&messages).unwrap_err();
            assert!(
                e.starts_with("messages[1].tool_calls[0].function.arguments: ")
                    && e.contains(problem),
                "{e}"
            );
            assert_eq!(body(&test_spec(&messages, &[], None)).unwrap_err(), e);
        }
        assert_eq!(check(&[Message::user("hi")]), Ok(()));
    }

    #[test]
    fn tool_use_answers_give_calls() {
        let answer = json!({"content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ], "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 9}});
        let parsed = parse(answer.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.content, "Let me check.");
        assert_eq!(parsed.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            parsed.tool_calls,
            [ToolCall::new(
                "toolu_01",
                "get_weather",
                r#"{"city":"Paris"}"#
            )]
        );
    }

    #[test]
    fn streamed_tool_use_is_put_together_from_json_pieces() {
        let event = |v: Value| SseEvent {
            event: v["type"].as_str().map(str::to_owned),
            data: v.to_string(),
        };
        let start = |index: u64, id: &str, name: &str| {
            event(json!({"type": "content_block_start", "index": index,
                         "content_block": {"type": "tool_use", "id": id, "name": name,
                                           "input": {}}}))
        };
        let piece = |index: u64, json: &str| {
            event(json!({"type": "content_block_delta", "index": index,
                         "delta": {"type": "input_json_delta", "partial_json": json}}))
        };
        let stop = |index: u64| event(json!({"type": "content_block_stop", "index": index}));
        let events = [
            event(json!({"type": "message_start", "message": {"usage": {"input_tokens": 9}}})),
            event(json!({"type": "content_block_start", "index": 0,
                         "content_block": {"type": "text", "text": ""}})),
            event(json!({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "text_delta", "text": "Checking."}})),
            stop(0),
            start(1, "toolu_a", "get_weather"),
            piece(1, ""),
            piece(1, "{\"city\": "),
            piece(1, "\"Paris\"}"),
            stop(1),
            start(2, "toolu_b", "get_time"),
            stop(2),
            event(
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                         "usage": {"output_tokens": 30}}),
            ),
            event(json!({"type": "message_stop"})),
        ];
        let mut decoder = Decoder::default();
        let mut text = String::new();
        for e in &events {
            match decoder.feed(e).unwrap() {
                Step::Text(t) => text.push_str(&t),
                Step::Skip | Step::Done => {}
            }
        }
        assert_eq!(text, "Checking.");
        assert_eq!(decoder.finish_reason, Some(FinishReason::ToolCalls));
        // The pieces as they came, numbered among the calls (not the message's blocks).
        assert_eq!(
            std::mem::take(&mut decoder.deltas),
            [
                ToolCallDelta::start(0, "toolu_a", "get_weather"),
                ToolCallDelta::arguments(0, "{\"city\": "),
                ToolCallDelta::arguments(0, "\"Paris\"}"),
                ToolCallDelta::start(1, "toolu_b", "get_time"),
            ]
        );
        assert_eq!(
            decoder.tool_calls(),
            [
                ToolCall::new("toolu_a", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::new("toolu_b", "get_time", "{}"),
            ]
        );
    }
}
