//! `response_format`: what shape the answer must have, and checking that it does.
use jsonschema::Validator;
use serde_json::Value;

use crate::LlmError;

/// At most this many schema violations are quoted back to the model.
const MAX_REPORTED_ERRORS: usize = 5;

pub(crate) enum Format {
    Text,
    JsonObject,
    JsonSchema { schema: Value, validator: Validator },
}

impl Format {
    pub fn parse(response_format: Option<&Value>) -> Result<Format, LlmError> {
        let Some(rf) = response_format else {
            return Ok(Format::Text);
        };
        let invalid = |m: &str| Err(LlmError::InvalidInput(format!("response_format: {m}")));
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Format::Text),
            Some("json_object") => Ok(Format::JsonObject),
            Some("json_schema") => {
                let Some(schema) = rf.pointer("/json_schema/schema") else {
                    return invalid("json_schema.schema is missing");
                };
                match jsonschema::validator_for(schema) {
                    Ok(validator) => Ok(Format::JsonSchema {
                        schema: schema.clone(),
                        validator,
                    }),
                    Err(e) => invalid(&format!("json_schema.schema is not a valid schema: {e}")),
                }
            }
            _ => invalid("type must be text, json_object or json_schema"),
        }
    }

    pub fn is_json(&self) -> bool {
        !matches!(self, Format::Text)
    }

    /// For providers without a `response_format` parameter (Anthropic): the same demand in
    /// words, for the system prompt.
    pub fn instruction(&self) -> Option<String> {
        match self {
            Format::Text => None,
            Format::JsonObject => Some(
                "Answer with a single JSON object and nothing else: no prose, no code fences."
                    .into(),
            ),
            Format::JsonSchema { schema, .. } => Some(format!(
                "Answer with a single JSON value that conforms to this JSON Schema, and nothing \
                 else: no prose, no code fences.\n{schema}"
            )),
        }
    }

    /// The parsed answer (`None` for text), or what is wrong with it in words a model can act
    /// on.
    pub fn check(&self, content: &str) -> Result<Option<Value>, String> {
        if !self.is_json() {
            return Ok(None);
        }
        let value = extract_json(content).ok_or("the answer is not valid JSON")?;
        match self {
            Format::Text => Ok(None),
            Format::JsonObject if !value.is_object() => {
                Err("the answer is not a JSON object".into())
            }
            Format::JsonObject => Ok(Some(value)),
            Format::JsonSchema { validator, .. } => {
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .take(MAX_REPORTED_ERRORS)
                    .map(|e| match e.instance_path().as_str() {
                        "" => e.to_string(),
                        path => format!("at {path}: {e}"),
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(Some(value))
                } else {
                    Err(format!(
                        "the JSON does not match the schema: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }
}

/// The JSON in an answer: the whole text, the inside of a ```json fence, or failing both the
/// span from the first `{`/`[` to the last `}`/`]` (models like a sentence before the data).
pub(crate) fn extract_json(content: &str) -> Option<Value> {
    let text = content.trim();
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    if let Some(fenced) = fenced(text) {
        if let Ok(v) = serde_json::from_str(fenced.trim()) {
            return Some(v);
        }
    }
    let start = text.find(['{', '['])?;
    let end = text.rfind(['}', ']'])?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

fn fenced(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let rest = &text[open + 3..];
    // The info string (`json`) runs to the end of the fence's line.
    let body = &rest[rest.find('\n')? + 1..];
    Some(&body[..body.find("```")?])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_is_found_bare_fenced_or_embedded() {
        let want = json!({"a": [1, 2]});
        assert_eq!(extract_json(" {\"a\": [1,2]} "), Some(want.clone()));
        assert_eq!(
            extract_json("```json\n{\"a\": [1,2]}\n```"),
            Some(want.clone())
        );
        assert_eq!(
            extract_json("Here it is:\n```\n{\"a\": [1,2]}\n```\nDone."),
            Some(want.clone())
        );
        assert_eq!(
            extract_json("Sure! {\"a\": [1,2]} Hope that helps."),
            Some(want)
        );
        assert_eq!(extract_json("no json here"), None);
        assert_eq!(extract_json("```json\n{broken\n```"), None);
    }

    #[test]
    fn schema_violations_are_described() {
        let rf = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {
            "type": "object", "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}
        }}});
        let f = Format::parse(Some(&rf)).unwrap();
        assert_eq!(
            f.check("{\"name\":\"Ada\",\"age\":36}").unwrap(),
            Some(json!({"name": "Ada", "age": 36}))
        );
        let problem = f.check("{\"name\":\"Ada\",\"age\":\"old\"}").unwrap_err();
        assert!(problem.contains("/age"), "{problem}");
        assert!(f.check("{\"name\":\"Ada\"}").unwrap_err().contains("age"));
        assert!(f.check("not json").unwrap_err().contains("not valid JSON"));
        assert!(f.instruction().unwrap().contains("\"required\""));
    }

    #[test]
    fn bad_formats_are_invalid_input() {
        for rf in [
            json!({"type": "xml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {"type": 12}}}),
        ] {
            let err = Format::parse(Some(&rf)).err().unwrap();
            assert_eq!(err.code(), "invalid_input", "{rf}");
        }
        assert!(Format::parse(Some(&json!({"type": "json_object"})))
            .unwrap()
            .check("[1]")
            .is_err());
        assert_eq!(Format::parse(None).unwrap().check("hi"), Ok(None));
    }
}
