//! LLM task routing (SPEC §3 "LLM gateway"): data only; `xenios-llm` acts on it.
//!
//! A task names an ordered list of candidates. A candidate is a model id on a provider:
//! `{ provider = "anthropic", model = "claude-sonnet-4-20250514" }`, or the shorthand string
//! `"anthropic:claude-sonnet-4-20250514"`. A candidate without a provider goes to
//! `default_provider` (OpenRouter, whose model ids are `vendor/model`, as in the SPEC table).
//!
//! Tasks given in configuration are merged over the built-in table field by field, so
//! `XENIOS__LLM__TASKS__CHAT__TEMPERATURE=0.2` changes that one value and keeps the rest;
//! `XENIOS__LLM__TASKS__CHAT__CANDIDATES="anthropic:claude-opus-4-20250514,openai:gpt-4o-mini"`
//! replaces the candidate list.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// The provider of candidates that name none: `openrouter`, `anthropic`, `openai`, or a
    /// name from `providers.extra` (an OpenAI-compatible server).
    pub default_provider: String,
    #[serde(deserialize_with = "merge_tasks")]
    pub tasks: BTreeMap<String, TaskSettings>,
    /// USD per million tokens, by model id as written in a candidate (or as sent upstream).
    /// A cost the provider reports itself (OpenRouter's `usage.cost`) wins. Configured prices
    /// are added to the built-in ones.
    #[serde(deserialize_with = "merge_prices")]
    pub prices: BTreeMap<String, ModelPrice>,
    pub retry: LlmRetrySettings,
    pub connect_timeout_ms: u64,
    /// Longest silence between two pieces of a streamed answer once it has started.
    pub stream_idle_timeout_ms: u64,
    /// Largest answer body read from a provider (a whole JSON answer, or a whole stream).
    pub max_response_bytes: usize,
    /// Largest single line of a streamed answer.
    pub max_sse_line_bytes: usize,
    /// Highest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// Extra tries when the output does not match the requested JSON schema.
    pub schema_retries: u32,
    /// Sent to OpenRouter as `HTTP-Referer` (app attribution); omitted when unset.
    pub openrouter_referer: Option<String>,
    /// Sent to OpenRouter as `X-Title`.
    pub openrouter_title: String,
    /// USD a user's LLM calls may cost per UTC day; once spent, their LLM requests are refused
    /// (`429`) until midnight UTC. Calls without a user and `service_role` callers are not
    /// limited. A request already running finishes, so the spend may pass the limit by what
    /// the requests admitted before it was reached cost. 0: no limit.
    pub user_daily_budget_usd: f64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            default_provider: "openrouter".into(),
            tasks: default_tasks(),
            prices: default_prices(),
            retry: LlmRetrySettings::default(),
            connect_timeout_ms: 10_000,
            stream_idle_timeout_ms: 60_000,
            max_response_bytes: 16 << 20,
            max_sse_line_bytes: 1 << 20,
            max_tokens_limit: 16_384,
            schema_retries: 2,
            openrouter_referer: None,
            openrouter_title: "Xenios".into(),
            user_daily_budget_usd: 0.0,
        }
    }
}

/// The longest wait any setting may ask for: past it a deadline computed from "now" could
/// overflow the clock.
const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;

impl LlmSettings {
    /// Checks what types alone cannot say; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_provider.trim().is_empty() {
            return Err("llm.default_provider: must not be empty".into());
        }
        if self.max_tokens_limit == 0 {
            return Err("llm.max_tokens_limit: must be at least 1".into());
        }
        if self.max_sse_line_bytes == 0 || self.max_response_bytes < self.max_sse_line_bytes {
            return Err(
                "llm.max_response_bytes: must be at least llm.max_sse_line_bytes (> 0)".into(),
            );
        }
        if self.retry.initial_backoff_ms > self.retry.max_backoff_ms {
            return Err("llm.retry.initial_backoff_ms: must be at most max_backoff_ms".into());
        }
        for (key, ms) in [
            ("llm.connect_timeout_ms", self.connect_timeout_ms),
            ("llm.stream_idle_timeout_ms", self.stream_idle_timeout_ms),
            ("llm.retry.max_backoff_ms", self.retry.max_backoff_ms),
        ] {
            if ms == 0 || ms > MAX_WAIT_MS {
                return Err(format!("{key}: between 1 and {MAX_WAIT_MS} (a day)"));
            }
        }
        for (name, task) in &self.tasks {
            let problem = if task.candidates.is_empty() {
                Some("needs at least one candidate".to_owned())
            } else if let Some(c) = task.candidates.iter().find(|c| c.model.trim().is_empty()) {
                Some(format!("candidate `{c}` has no model"))
            } else if !(0.0..=2.0).contains(&task.temperature) {
                Some("temperature must be between 0 and 2".to_owned())
            } else if task.max_tokens == 0 || task.max_tokens > self.max_tokens_limit {
                Some("max_tokens must be between 1 and llm.max_tokens_limit".to_owned())
            } else if task.timeout_ms == 0 || task.timeout_ms > MAX_WAIT_MS {
                Some(format!(
                    "timeout_ms must be between 1 and {MAX_WAIT_MS} (a day)"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(format!("llm.tasks.{name}: {problem}"));
            }
        }
        if !(self.user_daily_budget_usd.is_finite() && self.user_daily_budget_usd >= 0.0) {
            return Err("llm.user_daily_budget_usd: a number of at least 0 (0: no limit)".into());
        }
        for (model, price) in &self.prices {
            let amounts = [price.input_per_mtok, price.output_per_mtok]
                .into_iter()
                .chain(price.cache_read_per_mtok)
                .chain(price.cache_write_per_mtok);
            if amounts.into_iter().any(|p| !(p.is_finite() && p >= 0.0)) {
                return Err(format!(
                    "llm.prices.{model}: prices must be numbers of at least 0"
                ));
            }
        }
        Ok(())
    }
}

/// How one task is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Tried in order: the first is the primary, the rest are fallbacks.
    #[serde(deserialize_with = "candidate_list")]
    pub candidates: Vec<Candidate>,
    pub temperature: f64,
    pub max_tokens: u32,
    /// Ask providers for a streamed answer even when the caller wants it whole (long answers
    /// then cannot hit an idle timeout, and time to first token is measured).
    pub streaming: bool,
    /// One try's limit: the whole answer, or for a streamed answer its first token.
    pub timeout_ms: u64,
    /// Tries per candidate after the first, on rate limits, 5xx, timeouts and broken
    /// connections.
    pub retries: u32,
    /// Mark the prompt for Anthropic's prompt cache (on Anthropic, and on OpenRouter for
    /// `anthropic/` models): the system prompt and the conversation so far, so that the next
    /// turn of a conversation reads them at a tenth of the input price. A write costs 1.25×
    /// the input price, so it pays for prompts that come back within the cache's five
    /// minutes. Prompts under the model's minimum (1024 tokens) are not cached and cost
    /// nothing more. Other providers cache by themselves.
    #[serde(default)]
    pub prompt_cache: bool,
}

impl Default for TaskSettings {
    /// The base of a task that only configuration defines.
    fn default() -> Self {
        TaskSettings {
            candidates: Vec::new(),
            temperature: 0.7,
            max_tokens: 1000,
            streaming: false,
            timeout_ms: 60_000,
            retries: 2,
            prompt_cache: false,
        }
    }
}

/// A model on a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// `None`: `llm.default_provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model id as the routing table writes it. The `anthropic` and `openai` providers
    /// drop their own `anthropic/` or `openai/` prefix before sending it.
    pub model: String,
}

impl Candidate {
    pub fn new(provider: Option<&str>, model: &str) -> Self {
        Candidate {
            provider: provider.map(str::to_owned),
            model: model.to_owned(),
        }
    }

    /// `provider:model` or `model`. A prefix is a provider name only if it is a plain name
    /// (lowercase letters, digits, `_`, `-`), so `vendor/model:free` stays a model id.
    pub fn parse(s: &str) -> Candidate {
        let s = s.trim();
        match s.split_once(':') {
            Some((p, m))
                if !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    }) =>
            {
                Candidate::new(Some(p), m)
            }
            _ => Candidate::new(None, s),
        }
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.provider {
            Some(p) => write!(f, "{p}:{}", self.model),
            None => f.write_str(&self.model),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Input read from the provider's prompt cache; unset: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// Input written to the provider's prompt cache; unset: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmRetrySettings {
    /// Backoff before the first retry; doubles per retry, up to `max_backoff_ms`, with jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// The longest `Retry-After` waited for; a provider asking for more is skipped instead.
    pub max_retry_after_ms: u64,
}

impl Default for LlmRetrySettings {
    fn default() -> Self {
        LlmRetrySettings {
            initial_backoff_ms: 500,
            max_backoff_ms: 8_000,
            max_retry_after_ms: 30_000,
        }
    }
}

fn default_tasks() -> BTreeMap<String, TaskSettings> {
    const OPUS: &str = "anthropic/claude-opus-4-20250514";
    const SONNET: &str = "anthropic/claude-sonnet-4-20250514";
    const GPT4O_MINI: &str = "openai/gpt-4o-mini";
    let task = |primary, fallback, temperature, max_tokens, streaming, timeout_ms| TaskSettings {
        candidates: vec![
            Candidate::new(None, primary),
            Candidate::new(None, fallback),
        ],
        temperature,
        max_tokens,
        streaming,
        timeout_ms,
        retries: 2,
        prompt_cache: false,
    };
    BTreeMap::from([
        (
            "session_summary".into(),
            task(OPUS, SONNET, 0.3, 4000, false, 180_000),
        ),
        (
            "insight_generation".into(),
            task(OPUS, SONNET, 0.5, 2000, false, 120_000),
        ),
        (
            "chat".into(),
            // Each turn of a conversation sends the turns before it again.
            TaskSettings {
                prompt_cache: true,
                ..task(OPUS, SONNET, 0.7, 1500, true, 60_000)
            },
        ),
        (
            "intent_classification".into(),
            task(SONNET, GPT4O_MINI, 0.0, 100, false, 30_000),
        ),
        (
            "entity_extraction".into(),
            task(SONNET, GPT4O_MINI, 0.0, 500, false, 60_000),
        ),
    ])
}

/// List prices of the default table's models, by every id they may be named with. Anthropic
/// bills a cache write at 1.25× and a read at 0.1× the input price (five-minute cache); OpenAI
/// caches by itself, writes at no extra cost, and bills reads at half the input price.
fn default_prices() -> BTreeMap<String, ModelPrice> {
    let anthropic = |input: f64, output| ModelPrice {
        input_per_mtok: input,
        output_per_mtok: output,
        cache_read_per_mtok: Some(input * 0.1),
        cache_write_per_mtok: Some(input * 1.25),
    };
    let openai = |input: f64, output| ModelPrice {
        input_per_mtok: input,
        output_per_mtok: output,
        cache_read_per_mtok: Some(input * 0.5),
        cache_write_per_mtok: None,
    };
    [
        ("claude-opus-4-20250514", anthropic(15.0, 75.0)),
        ("claude-sonnet-4-20250514", anthropic(3.0, 15.0)),
        ("gpt-4o-mini", openai(0.15, 0.6)),
    ]
    .into_iter()
    .flat_map(|(model, p)| {
        let vendor = if model.starts_with("gpt") {
            "openai"
        } else {
            "anthropic"
        };
        [(model.to_owned(), p), (format!("{vendor}/{model}"), p)]
    })
    .collect()
}

/// One task as configuration writes it: only what it changes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskPatch {
    #[serde(default, deserialize_with = "some_candidate_list")]
    candidates: Option<Vec<Candidate>>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    streaming: Option<bool>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    prompt_cache: Option<bool>,
}

fn merge_tasks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, TaskSettings>, D::Error> {
    let patches = BTreeMap::<String, TaskPatch>::deserialize(d)?;
    let mut tasks = default_tasks();
    for (name, p) in patches {
        let task = tasks.entry(name).or_default();
        if let Some(v) = p.candidates {
            task.candidates = v;
        }
        if let Some(v) = p.temperature {
            task.temperature = v;
        }
        if let Some(v) = p.max_tokens {
            task.max_tokens = v;
        }
        if let Some(v) = p.streaming {
            task.streaming = v;
        }
        if let Some(v) = p.timeout_ms {
            task.timeout_ms = v;
        }
        if let Some(v) = p.retries {
            task.retries = v;
        }
        if let Some(v) = p.prompt_cache {
            task.prompt_cache = v;
        }
    }
    Ok(tasks)
}

fn merge_prices<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ModelPrice>, D::Error> {
    let mut prices = default_prices();
    prices.extend(BTreeMap::<String, ModelPrice>::deserialize(d)?);
    Ok(prices)
}

/// A list of candidates (strings or tables), or one comma-separated string as environment
/// variables give it.
fn candidate_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Candidate>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Short(String),
        Full(Candidate),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Joined(String),
        Items(Vec<Item>),
    }
    Ok(match List::deserialize(d)? {
        List::Joined(s) => s
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Candidate::parse)
            .collect(),
        List::Items(items) => items
            .into_iter()
            .map(|i| match i {
                Item::Short(s) => Candidate::parse(&s),
                Item::Full(c) => c,
            })
            .collect(),
    })
}

fn some_candidate_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Candidate>>, D::Error> {
    candidate_list(d).map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::{Overrides, Settings};

    fn load(toml: &str, env: &[(&str, &str)]) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("xenios.toml");
        std::fs::write(&file, toml).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(Some(&file), &env, &Overrides::new()).unwrap()
    }

    #[test]
    fn defaults_are_the_spec_table() {
        let s = LlmSettings::default();
        s.validate().unwrap();
        let chat = &s.tasks["chat"];
        assert_eq!(
            chat.candidates,
            vec![
                Candidate::new(None, "anthropic/claude-opus-4-20250514"),
                Candidate::new(None, "anthropic/claude-sonnet-4-20250514"),
            ]
        );
        assert_eq!(
            (chat.temperature, chat.max_tokens, chat.streaming),
            (0.7, 1500, true)
        );
        assert!(chat.prompt_cache);
        assert!(!s.tasks["session_summary"].prompt_cache);
        let intent = &s.tasks["intent_classification"];
        assert_eq!(intent.candidates[1].model, "openai/gpt-4o-mini");
        assert_eq!(
            (intent.temperature, intent.max_tokens, intent.streaming),
            (0.0, 100, false)
        );
        assert_eq!(s.tasks["session_summary"].max_tokens, 4000);
        assert_eq!(s.tasks["insight_generation"].temperature, 0.5);
        assert_eq!(s.tasks["entity_extraction"].max_tokens, 500);
        assert_eq!(s.tasks.len(), 5);
        assert_eq!(
            s.prices["anthropic/claude-opus-4-20250514"].output_per_mtok,
            75.0
        );
    }

    #[test]
    fn configured_tasks_merge_over_the_defaults() {
        let s = load(
            r#"
[llm.tasks.chat]
max_tokens = 900
[llm.tasks.session_summary]
prompt_cache = true
[llm.tasks.triage]
candidates = ["openai:llama3.1:8b", { provider = "anthropic", model = "claude-haiku" }]
[llm.prices."meta-llama/llama-3.1-8b"]
input_per_mtok = 0.1
output_per_mtok = 0.2
"#,
            &[
                ("XENIOS__LLM__TASKS__CHAT__TEMPERATURE", "0.2"),
                (
                    "XENIOS__LLM__TASKS__INTENT_CLASSIFICATION__CANDIDATES",
                    "anthropic:claude-sonnet-4-20250514, meta-llama/llama-3-8b:free",
                ),
            ],
        );
        let llm = &s.llm;
        llm.validate().unwrap();
        let chat = &llm.tasks["chat"];
        assert_eq!(
            (chat.temperature, chat.max_tokens, chat.streaming),
            (0.2, 900, true)
        );
        assert_eq!(chat.candidates.len(), 2);
        assert_eq!(
            llm.tasks["intent_classification"].candidates,
            vec![
                Candidate::new(Some("anthropic"), "claude-sonnet-4-20250514"),
                Candidate::new(None, "meta-llama/llama-3-8b:free"),
            ]
        );
        assert_eq!(
            llm.tasks["triage"].candidates,
            vec![
                Candidate::new(Some("openai"), "llama3.1:8b"),
                Candidate::new(Some("anthropic"), "claude-haiku"),
            ]
        );
        assert_eq!(llm.tasks["session_summary"].max_tokens, 4000);
        assert!(llm.tasks["session_summary"].prompt_cache && chat.prompt_cache);
        assert!(!llm.tasks["triage"].prompt_cache);
        let llama = llm.prices["meta-llama/llama-3.1-8b"];
        assert_eq!(llama.output_per_mtok, 0.2);
        assert_eq!(llama.cache_read_per_mtok, None);
        // The defaults survive a price table given in configuration.
        assert!(llm.prices.contains_key("openai/gpt-4o-mini"));
    }

    #[test]
    fn shown_configuration_loads_back_the_same() {
        let s = load("[llm.tasks.chat]\nretries = 1\n", &[]);
        let shown = s.show();
        assert!(shown.contains("claude-opus-4-20250514"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shown.toml");
        std::fs::write(&file, &shown).unwrap();
        let again = Settings::load_from(Some(&file), &HashMap::new(), &Overrides::new()).unwrap();
        assert_eq!(again.llm.tasks, s.llm.tasks);
        assert_eq!(again.llm.tasks["chat"].retries, 1);
    }

    #[test]
    fn bad_tasks_are_named() {
        let mut s = LlmSettings::default();
        s.tasks.get_mut("chat").unwrap().candidates.clear();
        assert!(s.validate().unwrap_err().contains("llm.tasks.chat"));
        let err = Settings::load_from(
            Some(Path::new("/dev/null")),
            &HashMap::from([("XENIOS__LLM__TASKS__CHAT__NO_SUCH".into(), "1".into())]),
            &Overrides::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no_such"), "{err}");
    }

    #[test]
    fn bad_prices_are_named() {
        let mut s = LlmSettings::default();
        s.prices
            .get_mut("gpt-4o-mini")
            .unwrap()
            .cache_write_per_mtok = Some(-1.0);
        assert!(s.validate().unwrap_err().contains("llm.prices.gpt-4o-mini"));
        let mut s = LlmSettings::default();
        s.prices.get_mut("gpt-4o-mini").unwrap().input_per_mtok = f64::NAN;
        assert!(s.validate().is_err());
        let s = LlmSettings {
            user_daily_budget_usd: -5.0,
            ..LlmSettings::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .starts_with("llm.user_daily_budget_usd"));
    }
}
