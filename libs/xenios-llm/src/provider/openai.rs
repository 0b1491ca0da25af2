//! OpenAI chat completions, as OpenAI, OpenRouter, vLLM, Ollama and llama.cpp serve them.
use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use xenios_contract::tools::MAX_TOOL_CALLS;

use super::anthropic::cached_text;
use super::{error_text, CallSpec, Parsed, Step};
use crate::sse::SseEvent;
use crate::{FinishReason, Message, Role, ToolCall, ToolCallDelta, Usage};

/// A message with pictures as OpenAI's part list: the pictures, then the text (if any), which
/// carries the cache mark.
fn parts(m: &Message, mark: bool) -> Value {
    let mut parts: Vec<Value> = m
        .images
        .iter()
        .map(|image| {
            let mut url = json!({"url": image.url});
            if let Some(detail) = image.detail {
                url["detail"] = json!(detail);
            }
            json!({"type": "image_url", "image_url": url})
        })
        .collect();
    if !m.content.is_empty() {
        let mut text = json!({"type": "text", "text": m.content});
        if mark {
            text["cache_control"] = json!({"type": "ephemeral"});
        }
        parts.push(text);
    }
    Value::Array(parts)
}

/// `mark_cache`: Anthropic's cache marks, as OpenRouter passes them on to Claude models: on the
/// last system message and on the last message (see `anthropic::body`).
pub(super) fn body(spec: &CallSpec<'_>, ask_usage: bool, mark_cache: bool) -> Value {
    let last = spec.messages.len().saturating_sub(1);
    let last_system = spec.messages.iter().rposition(|m| m.role == Role::System);
    // The demanded format in words goes at the end of the leading system prompt, as Anthropic
    // gets it, or is the system prompt when there is none.
    let leads_with_system = spec
        .messages
        .first()
        .is_some_and(|m| m.role == Role::System);
    let mut messages: Vec<Value> = spec
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let marked = i == last || Some(i) == last_system;
            let mark = mark_cache && marked;
            let text: Cow<'_, str> = match spec.instruction {
                Some(instruction) if i == 0 && leads_with_system => {
                    Cow::Owned(format!("{}\n\n{instruction}", m.content))
                }
                _ => Cow::Borrowed(&m.content),
            };
            let content = if !m.images.is_empty() {
                parts(m, mark)
            } else if mark && !text.is_empty() {
                cached_text(text.as_ref())
            } else if text.is_empty() && !m.tool_calls.is_empty() {
                // A message that only calls tools has no content, as OpenAI writes it.
                Value::Null
            } else {
                text.as_ref().into()
            };
            let mut message = json!({"role": m.role.as_str(), "content": content});
            if !m.tool_calls.is_empty() {
                message["tool_calls"] = json!(m.tool_calls);
            }
            if let Some(id) = &m.tool_call_id {
                message["tool_call_id"] = id.as_str().into();
            }
            message
        })
        .collect();
    if let Some(instruction) = spec.instruction.filter(|_| !leads_with_system) {
        messages.insert(0, json!({"role": "system", "content": instruction}));
    }
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
    // Without tools, a choice among them is an error to OpenAI.
    if !spec.tools.is_empty() {
        body["tools"] = json!(spec.tools);
        if let Some(choice) = spec.tool_choice {
            body["tool_choice"] = json!(choice);
        }
        if let Some(parallel) = spec.parallel_tool_calls {
            body["parallel_tool_calls"] = parallel.into();
        }
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

/// Several OpenAI-compatible servers (LiteLLM among them) send `null` for a list or a count
/// they have nothing for, where serde's `default` covers only a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default, deserialize_with = "null_as_default")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "null_as_default")]
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
        #[serde(default, deserialize_with = "null_as_default")]
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
        #[serde(default, deserialize_with = "null_as_default")]
        tool_calls: Vec<CallFragment>,
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
    let mut calls = Calls::default();
    for (index, fragment) in choice.message.tool_calls.into_iter().enumerate() {
        // Each is a whole call, even without an id.
        calls.absorb(CallFragment {
            index: Some(index),
            ..fragment
        })?;
    }
    Ok(Parsed {
        tool_calls: calls.finish(),
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

/// A tool call whole (`message.tool_calls[i]`) or a piece of one (`delta.tool_calls[i]`: id
/// and name in the first piece of its `index`, `arguments` in pieces to concatenate).
#[derive(Deserialize)]
struct CallFragment {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    name: Option<String>,
    /// JSON text; a server that sends the object itself is read too.
    arguments: Option<Value>,
}

/// Tool calls put together from their fragments, in the order they began.
#[derive(Default)]
struct Calls(Vec<PartialCall>);

#[derive(Default)]
struct PartialCall {
    index: Option<usize>,
    id: String,
    name: String,
    arguments: String,
}

impl Calls {
    /// Adds a fragment to its call; the piece a stream's reader is to pass on, if any: a
    /// call's first fragment names it (an id made up when the server gave none, since the
    /// caller's answer must name it), a later one adds arguments.
    fn absorb(&mut self, fragment: CallFragment) -> Result<Option<ToolCallDelta>, String> {
        let id = fragment.id.filter(|id| !id.is_empty());
        // A new id starts a call (some servers give parallel calls one index); without one,
        // the fragment continues the call of its index, or the last call.
        let known = match (&id, fragment.index) {
            (Some(id), _) => self.0.iter().position(|c| c.id == *id),
            (None, Some(index)) => self.0.iter().rposition(|c| c.index == Some(index)),
            (None, None) => self.0.len().checked_sub(1),
        };
        let (position, started) = match known {
            Some(position) => (position, false),
            None if self.0.len() == MAX_TOOL_CALLS => {
                return Err(format!("more than {MAX_TOOL_CALLS} tool calls"))
            }
            None => {
                self.0.push(PartialCall {
                    index: fragment.index,
                    ..PartialCall::default()
                });
                (self.0.len() - 1, true)
            }
        };
        let call = &mut self.0[position];
        match id {
            Some(id) => call.id = id,
            None if started => call.id = format!("tool_call_{position}"),
            None => {}
        }
        let (mut named, mut piece) = (None, String::new());
        if let Some(function) = fragment.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                call.name.clone_from(&name);
                named = Some(name);
            }
            piece = match function.arguments {
                Some(Value::String(text)) => text,
                None | Some(Value::Null) => String::new(),
                Some(value) => value.to_string(),
            };
            call.arguments.push_str(&piece);
        }
        let index = u32::try_from(position).unwrap_or(u32::MAX);
        Ok(match started {
            true => {
                let mut delta = ToolCallDelta::start(index, call.id.as_str(), call.name.as_str());
                delta.function.arguments = piece;
                Some(delta)
            }
            false if named.is_some() || !piece.is_empty() => {
                let mut delta = ToolCallDelta::arguments(index, piece);
                delta.function.name = named;
                Some(delta)
            }
            false => None,
        })
    }

    /// The calls, each named (`absorb` gave one a local server left without an id its own).
    fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_iter()
            .map(|call| ToolCall::new(call.id, call.name, call.arguments))
            .collect()
    }
}

/// `data: {chunk}` … `data: [DONE]`; the usage arrives in a last chunk without choices.
#[derive(Default)]
pub(super) struct Decoder {
    pub usage: Usage,
    pub cost: Option<f64>,
    /// Set once a choice carries its `finish_reason`.
    pub finish_reason: Option<FinishReason>,
    calls: Calls,
    /// The pieces of calls the last chunk gave, for the reader to pass on.
    pub deltas: Vec<ToolCallDelta>,
}

impl Decoder {
    pub fn feed(&mut self, event: &SseEvent) -> Result<Step, String> {
        #[derive(Deserialize)]
        struct Chunk {
            #[serde(default, deserialize_with = "null_as_default")]
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
            #[serde(default, deserialize_with = "null_as_default")]
            tool_calls: Vec<CallFragment>,
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
        let Some(delta) = choice.delta else {
            return Ok(Step::Skip);
        };
        for fragment in delta.tool_calls {
            self.deltas.extend(self.calls.absorb(fragment)?);
        }
        Ok(delta.content.map_or(Step::Skip, Step::Text))
    }

    pub fn tool_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls).finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::provider::{test_spec, test_weather_tool as weather};
    use crate::{Message, ToolChoice};

    fn conversation() -> Vec<Message> {
        vec![
            Message::user("Weather in Paris and Rome?"),
            Message::tool_calls(
                "",
                vec![
                    ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#),
                    ToolCall::new("call_2", "get_weather", r#"{"city":"Rome"}"#),
                ],
            ),
            Message::tool_result("call_1", "18°C"),
            Message::tool_result("call_2", "24°C"),
        ]
    }

    #[test]
    fn pictures_go_out_as_image_url_parts() {
        let picture = |url: &str, detail| crate::Image {
            url: url.into(),
            detail,
        };
        let messages = [
            Message {
                images: vec![
                    picture("https://example.com/cat.png", Some(crate::ImageDetail::Low)),
                    picture("data:image/png;base64,iVBORw0KGgo=", None),
                ],
                ..Message::user("Which is larger?")
            },
            Message {
                images: vec![picture("https://example.com/dog.png", None)],
                ..Message::user("")
            },
        ];
        let spec = test_spec(&messages, &[], None);
        let cat = json!({"type": "image_url", "image_url": {
            "url": "https://example.com/cat.png", "detail": "low"}});
        let pixel = json!({"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo="}});
        let dog = json!({"type": "image_url", "image_url": {"url": "https://example.com/dog.png"}});
        assert_eq!(
            body(&spec, false, false)["messages"],
            json!([
                {"role": "user", "content": [
                    cat, pixel, {"type": "text", "text": "Which is larger?"}]},
                {"role": "user", "content": [dog]},
            ])
        );
        // OpenRouter's cache mark for Claude goes on the text part.
        let marked = body(&test_spec(&messages[..1], &[], None), true, true);
        assert_eq!(
            marked["messages"][0]["content"][2],
            json!({"type": "text", "text": "Which is larger?",
                   "cache_control": {"type": "ephemeral"}})
        );
    }

    #[test]
    fn tools_choices_calls_and_results_go_out_in_openai_shapes() {
        let (messages, tools) = (conversation(), [weather()]);
        let choice = ToolChoice::Function("get_weather".into());
        let mut spec = test_spec(&messages, &tools, Some(&choice));
        spec.parallel_tool_calls = Some(false);
        let body = body(&spec, false, false);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "content": "18°C", "tool_call_id": "call_1"},
                {"role": "tool", "content": "24°C", "tool_call_id": "call_2"},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {
                "name": "get_weather", "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert_eq!(body["parallel_tool_calls"], false);

        // Without tools, no choice among them goes out.
        let messages = [Message::user("hi")];
        let mut spec = test_spec(&messages, &[], Some(&ToolChoice::None));
        spec.parallel_tool_calls = Some(true);
        let body = super::body(&spec, false, false);
        for absent in ["tools", "tool_choice", "parallel_tool_calls"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }
        assert!(body["messages"][0].get("tool_calls").is_none());
    }

    #[test]
    fn whole_answers_give_their_tool_calls() {
        let answer = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                // A local server's: no id, the arguments as an object.
                {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}});
        let parsed = parse(answer.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.content, "");
        assert_eq!(parsed.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            parsed.tool_calls,
            [
                ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::new("tool_call_1", "get_time", r#"{"tz":"CET"}"#),
            ]
        );
        let text = json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]});
        let parsed = parse(text.to_string().as_bytes()).unwrap();
        assert!(parsed.tool_calls.is_empty());
        assert_eq!(parsed.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn a_whole_answer_with_nulls_for_its_list_and_counts_is_read() {
        let answer = json!({"choices": [{"message": {"role": "assistant", "content": "hi",
            "tool_calls": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": null, "total_tokens": null}});
        let parsed = parse(answer.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.content, "hi");
        assert!(parsed.tool_calls.is_empty());
        assert_eq!(
            (parsed.usage.input_tokens, parsed.usage.output_tokens),
            (7, 0)
        );
        let refused = parse(json!({"choices": null}).to_string().as_bytes());
        assert_eq!(refused.err().as_deref(), Some("the answer has no choices"));
    }

    /// As LiteLLM streams: `"tool_calls": null` in every text delta, `"choices": null` beside
    /// the usage.
    #[test]
    fn a_stream_with_nulls_for_its_lists_and_counts_is_read() {
        let mut decoder = Decoder::default();
        let usage = SseEvent {
            event: None,
            data: json!({"choices": null, "usage": {"prompt_tokens": null,
                                                    "completion_tokens": 2}})
            .to_string(),
        };
        let events = [
            chunk(
                json!({"role": "assistant", "content": "Hel", "tool_calls": null}),
                None,
            ),
            chunk(json!({"content": "lo", "tool_calls": null}), None),
            chunk(json!({"content": null, "tool_calls": null}), Some("stop")),
            usage,
        ];
        let mut text = String::new();
        for event in &events {
            if let Step::Text(t) = decoder.feed(event).unwrap() {
                text.push_str(&t);
            }
        }
        assert_eq!(text, "Hello");
        assert_eq!(decoder.finish_reason, Some(FinishReason::Stop));
        assert!(decoder.deltas.is_empty() && decoder.tool_calls().is_empty());
        assert_eq!(
            (decoder.usage.input_tokens, decoder.usage.output_tokens),
            (0, 2)
        );
    }

    fn chunk(delta: Value, finish: Option<&str>) -> SseEvent {
        SseEvent {
            event: None,
            data: json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string(),
        }
    }

    #[test]
    fn streamed_calls_are_put_together_by_index() {
        let mut decoder = Decoder::default();
        let fragment = |index: usize, id: Option<&str>, name: Option<&str>, args: &str| {
            let mut function = json!({"arguments": args});
            if let Some(name) = name {
                function["name"] = name.into();
            }
            let mut call = json!({"index": index, "function": function});
            if let Some(id) = id {
                call["id"] = id.into();
                call["type"] = "function".into();
            }
            chunk(json!({"tool_calls": [call]}), None)
        };
        let events = [
            chunk(json!({"role": "assistant", "content": "Checking."}), None),
            fragment(0, Some("call_a"), Some("get_weather"), ""),
            fragment(0, None, None, "{\"ci"),
            fragment(1, Some("call_b"), Some("get_time"), "{\"tz\":"),
            fragment(0, None, None, "ty\":\"Paris\"}"),
            fragment(1, None, None, "\"CET\"}"),
            chunk(json!({}), Some("tool_calls")),
        ];
        let mut text = String::new();
        for event in &events {
            if let Step::Text(t) = decoder.feed(event).unwrap() {
                text.push_str(&t);
            }
        }
        assert_eq!(text, "Checking.");
        assert_eq!(decoder.finish_reason, Some(FinishReason::ToolCalls));
        let mut first_b = ToolCallDelta::start(1, "call_b", "get_time");
        first_b.function.arguments = "{\"tz\":".into();
        assert_eq!(
            std::mem::take(&mut decoder.deltas),
            [
                ToolCallDelta::start(0, "call_a", "get_weather"),
                ToolCallDelta::arguments(0, "{\"ci"),
                first_b,
                ToolCallDelta::arguments(0, "ty\":\"Paris\"}"),
                ToolCallDelta::arguments(1, "\"CET\"}"),
            ]
        );
        assert_eq!(
            decoder.tool_calls(),
            [
                ToolCall::new("call_a", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::new("call_b", "get_time", r#"{"tz":"CET"}"#),
            ]
        );
    }

    #[test]
    fn a_streamed_call_without_an_id_is_given_one_from_its_first_piece() {
        let mut decoder = Decoder::default();
        for piece in [
            json!({"index": 0, "function": {"name": "f", "arguments": "{"}}),
            json!({"index": 0, "function": {"arguments": "}"}}),
        ] {
            decoder
                .feed(&chunk(json!({"tool_calls": [piece]}), None))
                .unwrap();
        }
        let mut first = ToolCallDelta::start(0, "tool_call_0", "f");
        first.function.arguments = "{".into();
        assert_eq!(decoder.deltas, [first, ToolCallDelta::arguments(0, "}")]);
        assert_eq!(
            decoder.tool_calls(),
            [ToolCall::new("tool_call_0", "f", "{}")]
        );
    }

    #[test]
    fn parallel_calls_under_one_index_stay_apart() {
        let mut decoder = Decoder::default();
        for (id, name) in [("call_a", "f"), ("call_b", "g")] {
            let call = json!({"index": 0, "id": id, "type": "function",
                              "function": {"name": name, "arguments": "{}"}});
            decoder
                .feed(&chunk(json!({"tool_calls": [call]}), None))
                .unwrap();
        }
        let names: Vec<String> = decoder
            .tool_calls()
            .into_iter()
            .map(|c| format!("{}:{}", c.id, c.function.name))
            .collect();
        assert_eq!(names, ["call_a:f", "call_b:g"]);
    }

    #[test]
    fn a_stream_of_endless_calls_is_refused() {
        let mut decoder = Decoder::default();
        let mut refused = None;
        for i in 0..=MAX_TOOL_CALLS {
            let call = json!({"index": i, "id": format!("call_{i}"),
                              "function": {"name": "f", "arguments": ""}});
            if let Err(e) = decoder.feed(&chunk(json!({"tool_calls": [call]}), None)) {
                refused = Some((i, e));
            }
        }
        let (at, e) = refused.expect("refused");
        assert_eq!(at, MAX_TOOL_CALLS);
        assert!(e.contains("tool calls"), "{e}");
    }
}
