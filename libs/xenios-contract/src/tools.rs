//! Tool calling in the `llm` job input, in OpenAI's shapes (what the SDKs and agent frameworks
//! send): the functions a model may call, how it must choose among them, and the calls it
//! made. Each provider's wire translates them.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::inputs::InputError;

/// Functions per request, as OpenAI allows.
pub const MAX_TOOLS: usize = 128;
/// Calls in one assistant message.
pub const MAX_TOOL_CALLS: usize = 128;
/// The longest tool call id, in bytes (providers' ids are a few dozen).
pub const MAX_TOOL_CALL_ID_BYTES: usize = 256;
const MAX_NAME_BYTES: usize = 64;

/// The one kind of tool there is: `"type": "function"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolType {
    #[default]
    Function,
}

/// `{"type":"function","function":{"name","description","parameters"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: ToolType,
    pub function: FunctionDefinition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The arguments' JSON Schema (an object); none means the function takes no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// OpenAI's structured-outputs switch, passed on to OpenAI-compatible providers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl Tool {
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Tool {
        Tool {
            kind: ToolType::Function,
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
            },
        }
    }
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type":"function","function":{"name"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No call: text only.
    None,
    /// The model decides (the providers' default).
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Function(String),
}

const TOOL_CHOICE_SHAPES: &str =
    r#""none", "auto", "required" or {"type":"function","function":{"name"}}"#;

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => serializer.serialize_str("none"),
            ToolChoice::Auto => serializer.serialize_str("auto"),
            ToolChoice::Required => serializer.serialize_str("required"),
            ToolChoice::Function(name) => serde_json::json!({
                "type": "function", "function": {"name": name}
            })
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let named = || {
            let kind = value.get("type")?.as_str()?;
            let name = value.pointer("/function/name")?.as_str()?;
            (kind == "function").then(|| ToolChoice::Function(name.to_owned()))
        };
        match value.as_str() {
            Some("none") => Ok(ToolChoice::None),
            Some("auto") => Ok(ToolChoice::Auto),
            Some("required") => Ok(ToolChoice::Required),
            _ => named().ok_or_else(|| D::Error::custom(format!("one of {TOOL_CHOICE_SHAPES}"))),
        }
    }
}

/// A call the model made: `{"id","type":"function","function":{"name","arguments"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it (not always valid JSON: an answer cut short by
    /// `max_tokens` ends mid-way).
    pub arguments: String,
}

/// A piece of a call as a stream gives it, in the shape of OpenAI's chunks: a call's first
/// piece names it (`id`, `type`, `function.name`); the later ones add to its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// The call's place among the answer's calls, from 0.
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The next piece of the arguments' JSON text.
    #[serde(default)]
    pub arguments: String,
}

impl ToolCallDelta {
    /// A call's first piece.
    pub fn start(index: u32, id: impl Into<String>, name: impl Into<String>) -> Self {
        ToolCallDelta {
            index,
            id: Some(id.into()),
            kind: Some(ToolType::Function),
            function: FunctionCallDelta {
                name: Some(name.into()),
                arguments: String::new(),
            },
        }
    }

    /// More of a call's arguments.
    pub fn arguments(index: u32, piece: impl Into<String>) -> Self {
        ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: FunctionCallDelta {
                name: None,
                arguments: piece.into(),
            },
        }
    }
}

impl ToolCall {
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: ToolType::Function,
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// `^[a-zA-Z0-9_-]{1,64}$`, the names every provider takes.
fn check_name(field: &str, name: &str) -> Result<(), InputError> {
    let valid = (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match valid {
        true => Ok(()),
        false => Err(InputError::new(
            field,
            format!("`{name}` is not 1 to {MAX_NAME_BYTES} letters, digits, `_` or `-`"),
        )),
    }
}

pub(crate) fn check_call_id(field: &str, id: &str) -> Result<(), InputError> {
    match (1..=MAX_TOOL_CALL_ID_BYTES).contains(&id.len()) {
        true => Ok(()),
        false => Err(InputError::new(
            field,
            format!("1 to {MAX_TOOL_CALL_ID_BYTES} bytes"),
        )),
    }
}

/// At most [`MAX_TOOLS`] functions with valid, distinct names and object schemas; a
/// `tool_choice` that asks for a call names a given function or has some to call.
pub fn check_tools(tools: &[Tool], choice: Option<&ToolChoice>) -> Result<(), InputError> {
    if tools.len() > MAX_TOOLS {
        return Err(InputError::new(
            "input.tools",
            format!("at most {MAX_TOOLS} tools"),
        ));
    }
    for (i, tool) in tools.iter().enumerate() {
        let function = &tool.function;
        check_name(&format!("input.tools[{i}].function.name"), &function.name)?;
        if tools[..i].iter().any(|t| t.function.name == function.name) {
            return Err(InputError::new(
                &format!("input.tools[{i}].function.name"),
                format!("`{}` is named twice", function.name),
            ));
        }
        if function.parameters.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(InputError::new(
                &format!("input.tools[{i}].function.parameters"),
                "a JSON Schema object",
            ));
        }
    }
    match choice {
        Some(ToolChoice::Required) if tools.is_empty() => Err(InputError::new(
            "input.tool_choice",
            "`required` needs tools to call",
        )),
        Some(ToolChoice::Function(name)) if !tools.iter().any(|t| t.function.name == *name) => {
            Err(InputError::new(
                "input.tool_choice",
                format!("`{name}` is not one of the tools"),
            ))
        }
        _ => Ok(()),
    }
}

/// The calls of the assistant message at `field` (`input.messages[3]`).
pub(crate) fn check_calls(field: &str, calls: &[ToolCall]) -> Result<(), InputError> {
    if calls.len() > MAX_TOOL_CALLS {
        return Err(InputError::new(
            &format!("{field}.tool_calls"),
            format!("at most {MAX_TOOL_CALLS} calls"),
        ));
    }
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{field}.tool_calls[{j}]");
        check_call_id(&format!("{at}.id"), &call.id)?;
        check_name(&format!("{at}.function.name"), &call.function.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tool_choice_reads_and_writes_openai_shapes() {
        for (wire, choice) in [
            (json!("none"), ToolChoice::None),
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                ToolChoice::Function("get_weather".into()),
            ),
        ] {
            assert_eq!(
                serde_json::from_value::<ToolChoice>(wire.clone()).unwrap(),
                choice
            );
            assert_eq!(serde_json::to_value(&choice).unwrap(), wire);
        }
        for bad in [
            json!("any"),
            json!(1),
            json!({"type": "tool", "function": {"name": "f"}}),
            json!({"type": "function"}),
        ] {
            let e = serde_json::from_value::<ToolChoice>(bad.clone()).unwrap_err();
            assert!(e.to_string().contains("\"required\""), "{bad}: {e}");
        }
    }

    #[test]
    fn tool_calls_serialise_as_openai_does() {
        let call = ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#);
        let wire = json!({"id": "call_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
        assert_eq!(serde_json::to_value(&call).unwrap(), wire);
        assert_eq!(serde_json::from_value::<ToolCall>(wire).unwrap(), call);
    }

    #[test]
    fn tools_are_checked() {
        let weather = Tool::function("get_weather", "Weather", json!({"type": "object"}));
        let field = |tools: &[Tool], choice: Option<ToolChoice>| {
            check_tools(tools, choice.as_ref()).map_err(|e| e.field)
        };
        assert_eq!(field(std::slice::from_ref(&weather), None), Ok(()));
        assert_eq!(
            field(
                std::slice::from_ref(&weather),
                Some(ToolChoice::Function("get_weather".into()))
            ),
            Ok(())
        );
        assert_eq!(field(&[], Some(ToolChoice::Auto)), Ok(()));
        assert_eq!(
            field(&[], Some(ToolChoice::Required)),
            Err("input.tool_choice".into())
        );
        assert_eq!(
            field(
                std::slice::from_ref(&weather),
                Some(ToolChoice::Function("nope".into()))
            ),
            Err("input.tool_choice".into())
        );
        assert_eq!(
            field(&[weather.clone(), weather.clone()], None),
            Err("input.tools[1].function.name".into())
        );
        for bad in ["", "has space", "dot.ted", &"x".repeat(65)] {
            let tool = Tool::function(bad, "", json!({}));
            assert_eq!(
                field(&[weather.clone(), tool], None),
                Err("input.tools[1].function.name".into()),
                "{bad}"
            );
        }
        let mut no_schema = Tool::function("f", "", json!([]));
        assert_eq!(
            field(&[no_schema.clone()], None),
            Err("input.tools[0].function.parameters".into())
        );
        no_schema.function.parameters = None;
        assert_eq!(field(&[no_schema], None), Ok(()));
        let many: Vec<Tool> = (0..=MAX_TOOLS)
            .map(|i| Tool::function(format!("f{i}"), "", json!({})))
            .collect();
        assert_eq!(field(&many, None), Err("input.tools".into()));
        assert_eq!(field(&many[..MAX_TOOLS], None), Ok(()));
    }
}
