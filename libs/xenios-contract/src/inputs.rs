//! The `input` of each job kind (SPEC §3 "Jobs"): checked by the API at submission, parsed
//! again by the consumer. A bad input is refused with the field it concerns.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::images::{check_images, ImageInput};
use crate::tools::{check_call_id, check_calls, check_tools, Tool, ToolCall, ToolChoice};
use crate::JobKind;

/// Bounds on the diagnostic kind, so a canary cannot hold a consumer slot for long.
pub const ECHO_MAX_DELAY_MS: u64 = 10 * 60 * 1000;
pub const ECHO_MAX_PROGRESS_STEPS: u32 = 1000;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_LLM_MESSAGES: usize = 200;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: String,
    pub message: String,
}

impl InputError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        InputError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoInput {
    pub message: Value,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub progress_steps: u32,
    #[serde(default)]
    pub fail: Option<EchoFailure>,
    /// With `fail`: fail only the first N attempts, then succeed (0 = every attempt).
    #[serde(default)]
    pub fail_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchoFailure {
    Transient,
    Permanent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Markdown,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractionInput {
    pub file_id: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptionInput {
    pub file_id: Option<String>,
    pub url: Option<String>,
    pub language: Option<String>,
    #[serde(default)]
    pub diarize: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    /// system, user, assistant or tool.
    pub role: String,
    /// Required but for an assistant message that calls tools (OpenAI sends it as null) and a
    /// user message that shows pictures.
    #[serde(default)]
    pub content: Option<String>,
    /// A user message's pictures, shown to the model before its text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageInput>,
    /// An assistant message's calls, answered by the `tool` messages after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message's call: the result it carries is that call's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmInput {
    pub task: String,
    pub messages: Vec<ChatMessage>,
    pub response_format: Option<Value>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// Sequences that end the answer where the model writes them (not included in it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Stream tokens on the job's events.
    #[serde(default)]
    pub stream: bool,
    // The fields of `Sampling`, one by one: serde cannot deny unknown fields beside a
    // flattened struct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Functions the model may call instead of (or before) answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may make several calls in one answer (the providers' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl LlmInput {
    pub fn sampling(&self) -> Sampling {
        Sampling {
            top_p: self.top_p,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        }
    }
}

/// How the model samples, beyond `temperature`, in OpenAI's names and ranges. Each is passed
/// to the model only when given; a provider without one of them is not sent it (Anthropic
/// takes only `top_p`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Nucleus sampling: only the tokens of this much probability mass, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Best-effort repeatable sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// -2 to 2: positive values favour tokens not yet used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// -2 to 2: positive values disfavour tokens by how often they were used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

impl Sampling {
    /// Each value within OpenAI's range; the field named as in the job input.
    pub fn check(&self) -> Result<(), InputError> {
        if self.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(InputError::new("input.top_p", "between 0 and 1"));
        }
        for (field, penalty) in [
            ("input.presence_penalty", self.presence_penalty),
            ("input.frequency_penalty", self.frequency_penalty),
        ] {
            if penalty.is_some_and(|p| !(-2.0..=2.0).contains(&p)) {
                return Err(InputError::new(field, "between -2 and 2"));
            }
        }
        Ok(())
    }
}

/// Stop sequences per request, as OpenAI allows.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// The longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

fn parse<T: DeserializeOwned>(input: &Value) -> Result<T, InputError> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let text = e.inner().to_string();
        // The path ends at the object that lacks a field; serde names the field itself.
        let missing = text
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", None) => "input".to_owned(),
            (".", Some(name)) => format!("input.{name}"),
            (path, None) => format!("input.{path}"),
            (path, Some(name)) => format!("input.{path}.{name}"),
        };
        InputError::new(&field, text)
    })
}

fn check_source(file_id: &Option<String>, url: &Option<String>) -> Result<(), InputError> {
    match (file_id, url) {
        (Some(_), Some(_)) | (None, None) => Err(InputError::new(
            "input",
            "give exactly one of `file_id` and `url`",
        )),
        (Some(id), None) if id.is_empty() || id.len() > 128 => Err(InputError::new(
            "input.file_id",
            "must be 1 to 128 characters",
        )),
        (None, Some(url)) if url.len() > MAX_URL_LEN => Err(InputError::new(
            "input.url",
            format!("at most {MAX_URL_LEN} characters"),
        )),
        // The scheme, like the rest of the URL, is the fetch policy's to judge (a refused
        // URL is a 400 at submission).
        _ => Ok(()),
    }
}

pub fn parse_echo(input: &Value) -> Result<EchoInput, InputError> {
    let echo: EchoInput = parse(input)?;
    if echo.delay_ms > ECHO_MAX_DELAY_MS {
        return Err(InputError::new(
            "input.delay_ms",
            format!("at most {ECHO_MAX_DELAY_MS}"),
        ));
    }
    if echo.progress_steps > ECHO_MAX_PROGRESS_STEPS {
        return Err(InputError::new(
            "input.progress_steps",
            format!("at most {ECHO_MAX_PROGRESS_STEPS}"),
        ));
    }
    Ok(echo)
}

pub fn parse_extraction(input: &Value) -> Result<ExtractionInput, InputError> {
    let extraction: ExtractionInput = parse(input)?;
    check_source(&extraction.file_id, &extraction.url)?;
    Ok(extraction)
}

pub fn parse_transcription(input: &Value) -> Result<TranscriptionInput, InputError> {
    let transcription: TranscriptionInput = parse(input)?;
    check_source(&transcription.file_id, &transcription.url)?;
    if let Some(language) = &transcription.language {
        if !is_language_code(language) {
            return Err(InputError::new(
                "input.language",
                "a language code such as `en` or `pt-BR`: letters, digits and `-`",
            ));
        }
    }
    Ok(transcription)
}

/// A transcription's `language`, as the submission and the transcriber both check it: a
/// BCP-47-like tag (`en`, `pt-BR`, `zh-Hant`) of 2 to 35 characters (RFC 5646's buffer size),
/// starting with a letter, of letters, digits and `-` only, since it goes into a provider's
/// query string or form field.
pub fn is_language_code(language: &str) -> bool {
    (2..=35).contains(&language.len())
        && language.starts_with(|c: char| c.is_ascii_alphabetic())
        && language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub fn parse_llm(input: &Value) -> Result<LlmInput, InputError> {
    let llm: LlmInput = parse(input)?;
    if llm.task.is_empty() || llm.task.len() > 64 {
        return Err(InputError::new("input.task", "must be 1 to 64 characters"));
    }
    if llm.messages.is_empty() || llm.messages.len() > MAX_LLM_MESSAGES {
        return Err(InputError::new(
            "input.messages",
            format!("1 to {MAX_LLM_MESSAGES} messages"),
        ));
    }
    check_messages(&llm.messages)?;
    check_images(
        llm.messages
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("input.messages[{i}]"), m.images.as_slice())),
    )?;
    if let Some(t) = llm.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(InputError::new("input.temperature", "between 0 and 2"));
        }
    }
    if llm.max_tokens == Some(0) {
        return Err(InputError::new("input.max_tokens", "at least 1"));
    }
    check_stop(&llm.stop)?;
    llm.sampling().check()?;
    check_tools(&llm.tools, llm.tool_choice.as_ref())?;
    Ok(llm)
}

/// Known roles; content where it is required; pictures only from the user; tool calls only
/// from the assistant, each answered (if at all) by a `tool` message after it that names its id.
fn check_messages(messages: &[ChatMessage]) -> Result<(), InputError> {
    for (i, m) in messages.iter().enumerate() {
        let at = format!("input.messages[{i}]");
        let role = m.role.as_str();
        if !matches!(role, "system" | "user" | "assistant" | "tool") {
            return Err(InputError::new(
                &format!("{at}.role"),
                format!("`{role}` is not one of system, user, assistant, tool"),
            ));
        }
        if !m.tool_calls.is_empty() && role != "assistant" {
            return Err(InputError::new(
                &format!("{at}.tool_calls"),
                "only an assistant message calls tools",
            ));
        }
        check_calls(&at, &m.tool_calls)?;
        if !m.images.is_empty() && role != "user" {
            return Err(InputError::new(
                &format!("{at}.images"),
                "only a user message shows pictures",
            ));
        }
        if m.content.is_none() && m.tool_calls.is_empty() && m.images.is_empty() {
            return Err(InputError::new(&format!("{at}.content"), "required"));
        }
        match (role, &m.tool_call_id) {
            ("tool", None) => {
                return Err(InputError::new(
                    &format!("{at}.tool_call_id"),
                    "required in a tool message",
                ))
            }
            ("tool", Some(id)) => {
                let field = format!("{at}.tool_call_id");
                check_call_id(&field, id)?;
                let called = messages[..i]
                    .iter()
                    .flat_map(|earlier| &earlier.tool_calls)
                    .any(|call| call.id == *id);
                if !called {
                    return Err(InputError::new(
                        &field,
                        format!("`{id}` is no tool call of an earlier assistant message"),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(InputError::new(
                    &format!("{at}.tool_call_id"),
                    "only in a tool message",
                ))
            }
            (_, None) => {}
        }
    }
    Ok(())
}

/// At most `MAX_STOP_SEQUENCES` stop sequences of 1 to `MAX_STOP_BYTES` bytes each.
pub fn check_stop(stop: &[String]) -> Result<(), InputError> {
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(InputError::new(
            "input.stop",
            format!("at most {MAX_STOP_SEQUENCES} sequences"),
        ));
    }
    match stop
        .iter()
        .position(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        Some(i) => Err(InputError::new(
            &format!("input.stop[{i}]"),
            format!("1 to {MAX_STOP_BYTES} bytes"),
        )),
        None => Ok(()),
    }
}

/// Checks a job's input for its kind.
pub fn validate(kind: JobKind, input: &Value) -> Result<(), InputError> {
    if !input.is_object() {
        return Err(InputError::new("input", "must be a JSON object"));
    }
    if let Some(below) = nul_character_in(input) {
        // PostgreSQL cannot store it (in `text` or `jsonb`), and no kind needs it.
        return Err(InputError::new(
            &format!("input{below}"),
            "must not contain the NUL character (\\u0000)",
        ));
    }
    match kind {
        JobKind::Echo => parse_echo(input).map(drop),
        JobKind::Extraction => parse_extraction(input).map(drop),
        JobKind::Transcription => parse_transcription(input).map(drop),
        JobKind::Llm => parse_llm(input).map(drop),
    }
}

/// The path below `value` of the first field holding U+0000 in a string or a key (the key's
/// object named then); built on the way back, so a clean input costs no allocation.
fn nul_character_in(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_character_in(item).map(|below| format!("[{i}]{below}"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(String::new())
            } else {
                nul_character_in(item).map(|below| format!(".{key}{below}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_nul_character_is_refused_where_it_is() {
        let refused = |input: Value| validate(JobKind::Echo, &input).unwrap_err().field;
        assert_eq!(refused(json!({"message": "a\0b"})), "input.message");
        assert_eq!(
            refused(json!({"message": {"list": [1, {"x": "\0"}]}})),
            "input.message.list[1].x"
        );
        assert_eq!(refused(json!({"message": {"k\0": 1}})), "input.message");
        let llm = json!({"task": "chat", "messages": [{"role": "user", "content": "hi\0"}]});
        assert_eq!(
            validate(JobKind::Llm, &llm).unwrap_err().field,
            "input.messages[0].content"
        );
    }

    #[test]
    fn echo_inputs() {
        assert!(validate(JobKind::Echo, &json!({"message": "hi"})).is_ok());
        assert!(validate(
            JobKind::Echo,
            &json!({"message": {"a": [1]}, "delay_ms": 5})
        )
        .is_ok());
        assert_eq!(
            validate(JobKind::Echo, &json!({})).unwrap_err().field,
            "input.message"
        );
        // The field named is the one at fault, not the value found there.
        assert_eq!(
            validate(JobKind::Echo, &json!({"message": 1, "fail": "sometimes"}))
                .unwrap_err()
                .field,
            "input.fail"
        );
        assert_eq!(
            validate(JobKind::Echo, &json!({"message": 1, "delay_ms": 99999999}))
                .unwrap_err()
                .field,
            "input.delay_ms"
        );
        assert_eq!(
            validate(JobKind::Echo, &json!({"message": 1, "extra": true}))
                .unwrap_err()
                .field,
            "input.extra"
        );
        assert!(validate(JobKind::Echo, &json!("text")).is_err());
    }

    #[test]
    fn file_inputs_need_exactly_one_source() {
        assert!(validate(JobKind::Extraction, &json!({"file_id": "f1"})).is_ok());
        assert!(validate(
            JobKind::Extraction,
            &json!({"url": "https://x.example/a.pdf", "output": "text"})
        )
        .is_ok());
        assert!(validate(JobKind::Extraction, &json!({})).is_err());
        assert!(validate(
            JobKind::Extraction,
            &json!({"file_id": "f", "url": "https://x"})
        )
        .is_err());
        // The URL's scheme is the fetch policy's to judge, with the rest of it.
        assert!(validate(JobKind::Transcription, &json!({"url": "ftp://x/a.mp3"})).is_ok());
        assert_eq!(
            validate(
                JobKind::Transcription,
                &json!({"url": format!("https://x/{}", "a".repeat(MAX_URL_LEN))})
            )
            .unwrap_err()
            .field,
            "input.url"
        );
        assert_eq!(
            validate(
                JobKind::Extraction,
                &json!({"file_id": "f", "output": "pdf"})
            )
            .unwrap_err()
            .field,
            "input.output"
        );
    }

    #[test]
    fn llm_pictures_come_from_the_user() {
        let picture = json!({"url": "https://example.com/cat.png", "detail": "high"});
        let shows = |role: &str, content: Value| {
            json!({"task": "chat", "messages": [
                {"role": role, "content": content, "images": [picture]}]})
        };
        let parsed = parse_llm(&shows("user", Value::Null)).unwrap();
        assert_eq!(
            parsed.messages[0].images[0].url.as_deref(),
            Some("https://example.com/cat.png")
        );
        assert!(parse_llm(&shows("user", "What is this?".into())).is_ok());
        for role in ["system", "assistant"] {
            assert_eq!(
                parse_llm(&shows(role, "x".into())).unwrap_err().field,
                "input.messages[0].images"
            );
        }
        let bad = json!({"task": "chat", "messages": [
            {"role": "user", "content": "a", "images": [{"url": "gopher://x"}]}]});
        assert_eq!(
            parse_llm(&bad).unwrap_err().field,
            "input.messages[0].images[0].url"
        );
        let odd_detail = json!({"task": "chat", "messages": [
            {"role": "user", "images": [{"url": "https://x/a.png", "detail": "max"}]}]});
        assert!(parse_llm(&odd_detail)
            .unwrap_err()
            .field
            .starts_with("input.messages[0].images[0]"));
    }

    #[test]
    fn llm_inputs() {
        let ok = json!({"task": "chat", "messages": [{"role": "user", "content": "hi"}]});
        assert!(validate(JobKind::Llm, &ok).is_ok());
        let bad_role = json!({"task": "chat", "messages": [{"role": "robot", "content": "hi"}]});
        assert_eq!(
            validate(JobKind::Llm, &bad_role).unwrap_err().field,
            "input.messages[0].role"
        );
        assert!(validate(JobKind::Llm, &json!({"task": "chat", "messages": []})).is_err());
        let wrong_type = json!({"task": "chat", "messages": [{"role": "user", "content": 5}]});
        assert_eq!(
            validate(JobKind::Llm, &wrong_type).unwrap_err().field,
            "input.messages[0].content"
        );
        let missing = json!({"task": "chat", "messages": [{"role": "user"}]});
        assert_eq!(
            validate(JobKind::Llm, &missing).unwrap_err().field,
            "input.messages[0].content"
        );

        let with_stop = |stop: Value| json!({"task": "chat", "messages": [{"role": "user", "content": "hi"}], "stop": stop});
        assert!(validate(JobKind::Llm, &with_stop(json!(["\n\n", "END"]))).is_ok());
        let field = |stop| validate(JobKind::Llm, &with_stop(stop)).unwrap_err().field;
        assert_eq!(field(json!(["a", "b", "c", "d", "e"])), "input.stop");
        assert_eq!(field(json!(["a", ""])), "input.stop[1]");
        assert_eq!(field(json!(["x".repeat(257)])), "input.stop[0]");
        assert_eq!(field(json!([1])), "input.stop[0]");
    }

    #[test]
    fn llm_tool_inputs() {
        let weather = json!({"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
        let call = json!({"id": "call_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
        let conversation = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C, clear"},
        ]);
        let input = |extra: Value| {
            let mut input = json!({"task": "chat", "messages": conversation, "tools": [weather]});
            input
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            input
        };
        let parsed = parse_llm(&input(json!({
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
        })))
        .unwrap();
        assert_eq!(parsed.tools[0].function.name, "get_weather");
        assert_eq!(
            parsed.tool_choice,
            Some(ToolChoice::Function("get_weather".into()))
        );
        assert_eq!(parsed.parallel_tool_calls, Some(false));
        assert_eq!(parsed.messages[1].content, None);
        assert_eq!(
            parsed.messages[1].tool_calls,
            [ToolCall::new(
                "call_1",
                "get_weather",
                "{\"city\":\"Paris\"}"
            )]
        );
        assert_eq!(parsed.messages[2].tool_call_id.as_deref(), Some("call_1"));

        let field = |input: Value| validate(JobKind::Llm, &input).unwrap_err().field;
        assert_eq!(
            field(input(
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})
            )),
            "input.tools[0].function.name"
        );
        assert_eq!(
            field(input(
                json!({"tools": [{"type": "web", "function": {"name": "a"}}]})
            )),
            "input.tools[0].type"
        );
        assert_eq!(
            field(input(json!({"tool_choice": "sometimes"}))),
            "input.tool_choice"
        );
        assert_eq!(
            field(input(
                json!({"tool_choice": {"type": "function", "function": {"name": "x"}}})
            )),
            "input.tool_choice"
        );
        assert_eq!(
            field(input(json!({"parallel_tool_calls": "yes"}))),
            "input.parallel_tool_calls"
        );
        let unnamed = json!({"id": "call_1", "type": "function",
                             "function": {"name": "", "arguments": "{}"}});
        let no_id = json!({"id": "", "type": "function",
                           "function": {"name": "f", "arguments": "{}"}});
        let not_text = json!({"id": "call_1", "type": "function",
                              "function": {"name": "f", "arguments": {"city": "Paris"}}});
        let user = json!({"role": "user", "content": "hi"});
        for (messages, at) in [
            // A tool's answer names a call made before it.
            (
                json!([user, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]),
                "input.messages[1].tool_call_id",
            ),
            (
                json!([user, {"role": "assistant", "tool_calls": [call]},
                       {"role": "tool", "content": "x"}]),
                "input.messages[2].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "hi", "tool_call_id": "call_1"}]),
                "input.messages[0].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "hi", "tool_calls": [call]}]),
                "input.messages[0].tool_calls",
            ),
            (
                json!([{"role": "assistant", "content": null}]),
                "input.messages[0].content",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [unnamed]}]),
                "input.messages[0].tool_calls[0].function.name",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [no_id]}]),
                "input.messages[0].tool_calls[0].id",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [not_text]}]),
                "input.messages[0].tool_calls[0].function.arguments",
            ),
        ] {
            assert_eq!(
                field(json!({"task": "chat", "messages": messages})),
                at,
                "{messages}"
            );
        }
    }

    #[test]
    fn llm_sampling_within_openai_ranges() {
        let with = |extra: Value| {
            let mut input =
                json!({"task": "chat", "messages": [{"role": "user", "content": "hi"}]});
            input
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            validate(JobKind::Llm, &input)
                .map(|_| ())
                .map_err(|e| e.field)
        };
        let all =
            json!({"top_p": 0.9, "seed": -7, "presence_penalty": -2.0, "frequency_penalty": 2});
        assert_eq!(with(all.clone()), Ok(()));
        let parsed = parse_llm(
            &json!({"task": "chat", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.9, "seed": -7}),
        )
        .unwrap();
        assert_eq!(
            parsed.sampling(),
            Sampling {
                top_p: Some(0.9),
                seed: Some(-7),
                ..Sampling::default()
            }
        );
        assert_eq!(with(json!({"top_p": 1.5})), Err("input.top_p".into()));
        assert_eq!(with(json!({"top_p": -0.1})), Err("input.top_p".into()));
        assert_eq!(
            with(json!({"presence_penalty": 2.5})),
            Err("input.presence_penalty".into())
        );
        assert_eq!(
            with(json!({"frequency_penalty": -3})),
            Err("input.frequency_penalty".into())
        );
        assert_eq!(with(json!({"seed": 1.5})), Err("input.seed".into()));
    }
}
