//! What this crate's tests share: the provider stub, and the gateway's configuration and
//! requests pointed at it.
#![allow(dead_code)]

mod stub;

pub use stub::*;

use std::sync::Mutex;

use xenios_config::{Candidate, LlmSettings, ProviderSettings, ProvidersSettings, Secret};
use xenios_llm::{CallObserver, CallRecord, LlmRequest, Message, TaskSettings};

/// A task over `candidates` (`provider:model` or `model`), quick to retry.
pub fn task(candidates: &[&str]) -> TaskSettings {
    TaskSettings {
        candidates: candidates.iter().map(|c| Candidate::parse(c)).collect(),
        temperature: 0.2,
        max_tokens: 100,
        streaming: false,
        timeout_ms: 5000,
        retries: 2,
        prompt_cache: false,
    }
}

pub fn settings(tasks: Vec<(&str, TaskSettings)>) -> LlmSettings {
    let mut s = LlmSettings {
        tasks: tasks.into_iter().map(|(n, t)| (n.to_owned(), t)).collect(),
        ..LlmSettings::default()
    };
    s.retry.initial_backoff_ms = 10;
    s.retry.max_backoff_ms = 40;
    s.retry.max_retry_after_ms = 5000;
    s
}

/// Every built-in provider pointed at `stub`, with keys.
pub fn providers(stub: &Stub) -> ProvidersSettings {
    let at = |base: String, key: &str| ProviderSettings {
        api_key: Some(Secret::new(key)),
        base_url: Some(base),
    };
    ProvidersSettings {
        openrouter: at(format!("{}/v1", stub.url), "or-key"),
        anthropic: at(stub.url.clone(), "an-key"),
        openai: at(format!("{}/v1/", stub.url), "oa-key"),
        ..ProvidersSettings::default()
    }
}

pub fn request(task: &str) -> LlmRequest {
    LlmRequest {
        task: task.to_owned(),
        messages: vec![
            Message::system("You are terse."),
            Message::user("Say hello."),
        ],
        ..LlmRequest::default()
    }
}

/// Keeps every call record.
#[derive(Default)]
pub struct Calls(Mutex<Vec<CallRecord>>);

impl Calls {
    pub fn all(&self) -> Vec<CallRecord> {
        self.0.lock().unwrap().clone()
    }
}

impl CallObserver for Calls {
    fn on_call(&self, record: &CallRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}
