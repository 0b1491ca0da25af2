//! The LLM gateway end to end: HTTP → API → `jobs.llm` → the LLM consumer → a provider → the
//! job's events → API → HTTP. The providers are a stub server (the gateway crate's, included
//! below) speaking OpenAI's and Anthropic's real wire formats (chunk JSON, `data: [DONE]`,
//! Anthropic's event names), scripted per request, that sees every request and notices a
//! client that goes away.
mod common;

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use xenios_contract::envelope::JobCommand;
use xenios_contract::JobKind;
use xenios_store::NewJob;

const WITHIN: Duration = Duration::from_secs(20);

// ---- The provider stub, shared with the gateway crate's own tests ----

#[path = "../libs/xenios-llm/tests/support/stub.rs"]
mod provider_stub;

use provider_stub::*;

// ---- The stack and its routing ----

/// A task served by `candidates` (`provider:model`), retried quickly.
struct Task<'a> {
    name: &'a str,
    candidates: &'a str,
    retries: u32,
    streaming: bool,
}

impl<'a> Task<'a> {
    fn new(name: &'a str, candidates: &'a str) -> Self {
        Task {
            name,
            candidates,
            retries: 2,
            streaming: false,
        }
    }
}

/// A fresh stub and a SQLite stack with one task routed to `candidates`.
async fn one_task_stack(task: &str, candidates: &str) -> (Stub, Stack) {
    let stub = Stub::start().await;
    let stack = stack_with(Db::Sqlite, &stub, &[Task::new(task, candidates)], &[]).await;
    (stub, stack)
}

/// A stack whose providers are all the stub, with `tasks` in its routing table.
async fn stack_with(db: Db, stub: &Stub, tasks: &[Task<'_>], extra: &[(&str, &str)]) -> Stack {
    let mut overrides: Vec<(String, String)> = vec![
        (
            "providers.openai.base_url".into(),
            format!("{}/v1", stub.url),
        ),
        ("providers.openai.api_key".into(), "oa-test-key".into()),
        ("providers.anthropic.base_url".into(), stub.url.clone()),
        ("providers.anthropic.api_key".into(), "an-test-key".into()),
        (
            "providers.openrouter.base_url".into(),
            format!("{}/v1", stub.url),
        ),
        ("providers.openrouter.api_key".into(), "or-test-key".into()),
        ("llm.retry.initial_backoff_ms".into(), "10".into()),
        ("llm.retry.max_backoff_ms".into(), "40".into()),
        ("llm.retry.max_retry_after_ms".into(), "5000".into()),
    ];
    for task in tasks {
        let key = |k: &str| format!("llm.tasks.{}.{k}", task.name);
        overrides.push((key("candidates"), task.candidates.into()));
        overrides.push((key("retries"), task.retries.to_string()));
        overrides.push((key("streaming"), task.streaming.to_string()));
        overrides.push((key("timeout_ms"), "5000".into()));
        overrides.push((key("max_tokens"), "200".into()));
    }
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Stack::start_with(db, &pairs, 1).await
}

fn ask(task: &str) -> Value {
    json!({"task": task, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."}
    ]})
}

/// `POST /v1/chat/completions` as a service call: an SDK's bearer API key, no user.
fn chat_completion(
    stack: &Stack,
    body: Value,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
}

fn job_id_of(response: &reqwest::Response) -> String {
    response.headers()["x-job-id"].to_str().unwrap().to_owned()
}

async fn complete(stack: &Stack, body: Value) -> (u16, String, Value) {
    let response = stack
        .post("/api/v1/llm/complete")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let job = response
        .headers()
        .get("x-job-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, job, response.json().await.unwrap())
}

/// Reads Server-Sent Events one at a time, as they arrive.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); `None` at the end of the stream.
    async fn next(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if event.event.is_some() || !event.data.is_empty() {
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no event within {WITHIN:?}; so far: {:?}", self.buffer),
            }
        }
    }

    async fn rest(mut self) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

async fn open_stream(stack: &Stack, body: Value) -> (String, SseReader) {
    let response = stack
        .post("/api/v1/llm/stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    (job_id_of(&response), SseReader::new(response))
}

fn tokens(events: &[Sse]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("token"))
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect()
}

fn last_named<'a>(events: &'a [Sse], name: &str) -> &'a Sse {
    events
        .iter()
        .rfind(|e| e.event.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` event in {events:?}"))
}

/// Waits for the first token, lets the stub go on, and reads the rest: a token buffered
/// anywhere on the way would never arrive before the stub is let go, and the test would fail.
async fn stream_in_two_halves(stack: &Stack, task: &str, go: &Notify) -> (String, Vec<Sse>) {
    let (job_id, mut reader) = open_stream(stack, ask(task)).await;
    let first = loop {
        let event = reader.next().await.expect("a first token");
        if event.event.as_deref() == Some("token") {
            break event;
        }
    };
    go.notify_one();
    let mut events = vec![first];
    events.extend(reader.rest().await);
    (job_id, events)
}

// ---- Each provider, whole and streamed ----

#[tokio::test]
async fn openai_compatible_provider_complete_and_stream() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new("oa_task", "openai:gpt-oa")],
        &[
            ("llm.prices.gpt-oa.input_per_mtok", "2"),
            ("llm.prices.gpt-oa.output_per_mtok", "10"),
        ],
    )
    .await;
    stub.push("gpt-oa", openai_text("gpt-oa", "Hello there.", 12, 3));
    let (status, job_id, answer) = complete(&stack, ask("oa_task")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "Hello there.");
    assert_eq!(answer["model"], "gpt-oa");
    assert_eq!(answer["fallback_used"], false);
    assert_eq!(
        answer["usage"],
        json!({"input_tokens": 12, "output_tokens": 3})
    );
    assert!(answer["latency_ms"].is_u64());
    let cost = answer["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (12.0 * 2.0 + 3.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert!(answer.get("parsed").is_none(), "{answer}");
    assert_eq!(answer["finish_reason"], "stop");
    let seen = &stub.seen("gpt-oa")[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer oa-test-key");
    assert_eq!(seen.body["messages"][1]["content"], "Say hello.");
    let job = stack.job(&job_id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"]["content"], "Hello there.");

    let go = Arc::new(Notify::new());
    let mut pieces = openai_stream_start("gpt-oa", &["Hel"]);
    pieces.push(Piece::WaitFor(go.clone()));
    pieces.extend(
        openai_stream_start("gpt-oa", &["lo", " world"])
            .into_iter()
            .skip(1),
    );
    pieces.extend(openai_stream_end("gpt-oa", 7, 3, None));
    stub.push("gpt-oa", Script::Sse(pieces));
    let (job_id, events) = stream_in_two_halves(&stack, "oa_task", &go).await;
    assert_eq!(tokens(&events), ["Hel", "lo", " world"]);
    let done = last_named(&events, "done").json();
    assert_eq!(done["model"], "gpt-oa");
    assert_eq!(done["fallback_used"], false);
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 7, "output_tokens": 3})
    );
    assert!(
        done["latency_ms"].is_u64() && done["cost_usd"].is_f64(),
        "{done}"
    );
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
    assert_eq!(stub.seen("gpt-oa")[1].body["stream"], true);
    let job = stack.wait_for(&job_id, &["succeeded"], WITHIN).await;
    assert_eq!(job["result"]["content"], "Hello world");
    // The job's own event stream carried the same tokens.
    let relayed = stack.events(&job_id, None, WITHIN).await;
    assert_eq!(tokens(&relayed), ["Hel", "lo", " world"]);

    // SPEC §6: the library's LLM metrics, on /metrics.
    let text = stack.metrics().await;
    for line in [
        r#"xenios_llm_requests_total{task="oa_task",model="gpt-oa",outcome="success"} 2"#,
        r#"xenios_llm_tokens_total{task="oa_task",model="gpt-oa",direction="input"} 19"#,
        r#"xenios_llm_tokens_total{task="oa_task",model="gpt-oa",direction="output"} 6"#,
        r#"xenios_llm_time_to_first_token_seconds_count{task="oa_task",model="gpt-oa"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(
        text.contains(r#"xenios_llm_cost_usd_total{task="oa_task",model="gpt-oa"}"#),
        "no cost metric"
    );
    assert!(text.contains(r#"xenios_jobs_submitted_total{kind="llm"}"#));
}

#[tokio::test]
async fn anthropic_provider_complete_and_stream() {
    let (stub, stack) = one_task_stack("an_task", "anthropic:claude-an").await;
    stub.push(
        "claude-an",
        anthropic_text("claude-an", "Hi from Claude.", 20, 5),
    );
    let (status, _, answer) = complete(&stack, ask("an_task")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "Hi from Claude.");
    assert_eq!(answer["model"], "claude-an");
    assert_eq!(
        answer["usage"],
        json!({"input_tokens": 20, "output_tokens": 5})
    );
    let seen = &stub.seen("claude-an")[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "an-test-key");
    assert!(seen.headers.contains_key("anthropic-version"));
    assert_eq!(seen.body["system"], "You are terse.");

    let go = Arc::new(Notify::new());
    let mut pieces = anthropic_stream_start("claude-an", &["Hel"], 9);
    pieces.push(Piece::WaitFor(go.clone()));
    pieces.extend(
        anthropic_stream_start("claude-an", &["lo"], 9)
            .into_iter()
            .skip(3),
    );
    pieces.extend(anthropic_stream_end(4));
    stub.push("claude-an", Script::Sse(pieces));
    let (job_id, events) = stream_in_two_halves(&stack, "an_task", &go).await;
    assert_eq!(tokens(&events), ["Hel", "lo"]);
    let done = last_named(&events, "done").json();
    assert_eq!(done["model"], "claude-an");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 9, "output_tokens": 4})
    );
    let job = stack.wait_for(&job_id, &["succeeded"], WITHIN).await;
    assert_eq!(job["result"]["content"], "Hello");
}

#[tokio::test]
async fn openrouter_provider_complete_and_stream() {
    let (stub, stack) = one_task_stack("or_task", "openrouter:vendor/model-or").await;
    let model = "vendor/model-or";
    stub.push(model, openai_text(model, "Routed.", 4, 2));
    let (status, _, answer) = complete(&stack, ask("or_task")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "Routed.");
    assert_eq!(answer["model"], model);
    let seen = &stub.seen(model)[0];
    assert_eq!(seen.headers["authorization"], "Bearer or-test-key");
    assert_eq!(seen.headers["x-title"], "Xenios");

    stub.push(model, openai_stream(model, &["Rou", "ted"], 4, 2, None));
    let (_, reader) = open_stream(&stack, ask("or_task")).await;
    let events = reader.rest().await;
    assert_eq!(tokens(&events), ["Rou", "ted"]);
    assert_eq!(last_named(&events, "done").json()["model"], model);
}

// ---- Failures, fallback and the audit log ----

/// `task` differs per database: the metrics are counted per process.
async fn fallback_after_503s_logs_every_try(db: Db, task: &str) {
    let stub = Stub::start().await;
    let stack = stack_with(
        db,
        &stub,
        &[Task::new(task, "openai:gpt-down,anthropic:claude-up")],
        &[
            ("llm.prices.claude-up.input_per_mtok", "3"),
            ("llm.prices.claude-up.output_per_mtok", "15"),
        ],
    )
    .await;
    for _ in 0..3 {
        stub.push("gpt-down", openai_error(503, "upstream overloaded"));
    }
    stub.push(
        "claude-up",
        anthropic_text("claude-up", "From the backup.", 100, 10),
    );

    let (status, job_id, answer) = complete(&stack, ask(task)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "From the backup.");
    assert_eq!(answer["fallback_used"], true);
    assert_eq!(answer["model"], "claude-up");
    assert_eq!(
        stub.seen("gpt-down").len(),
        3,
        "the first try and two retries"
    );

    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    let summary: Vec<_> = logs
        .iter()
        .map(|l| (l.attempt, l.provider.as_str(), l.model.as_str(), l.success))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "openai", "gpt-down", false),
            (2, "openai", "gpt-down", false),
            (3, "openai", "gpt-down", false),
            (4, "anthropic", "claude-up", true),
        ],
        "{db:?}"
    );
    for log in &logs {
        assert_eq!(log.user_id.as_deref(), Some(USER));
        assert_eq!(log.job_id.unwrap().to_string(), job_id);
        assert_eq!(log.task, task);
        assert!(log.latency_ms >= 0);
        assert_eq!(log.ttft_ms, None, "a whole answer has no first token");
    }
    let error = logs[0].error.as_deref().unwrap();
    assert!(
        error.contains("HTTP 503") && error.contains("upstream overloaded"),
        "{error}"
    );
    assert_eq!((logs[0].input_tokens, logs[0].output_tokens), (0, 0));
    let ok = &logs[3];
    assert_eq!(
        (ok.input_tokens, ok.output_tokens, ok.error.as_deref()),
        (100, 10, None)
    );
    let cost = ok.cost_usd.unwrap();
    assert!(
        (cost - (100.0 * 3.0 + 10.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    // Streamed calls record their time to first token.
    stub.push(
        "gpt-down",
        openai_stream("gpt-down", &["a", "b"], 3, 2, None),
    );
    let (job_id, reader) = open_stream(&stack, ask(task)).await;
    assert_eq!(tokens(&reader.rest().await), ["a", "b"]);
    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].success && logs[0].ttft_ms.is_some(), "{logs:?}");
    assert_eq!((logs[0].input_tokens, logs[0].output_tokens), (3, 2));

    let text = stack.metrics().await;
    for line in [
        format!(r#"xenios_llm_fallbacks_total{{task="{task}"}} 1"#),
        format!(
            r#"xenios_llm_requests_total{{task="{task}",model="gpt-down",outcome="server_error"}} 3"#
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`");
    }
}

#[tokio::test]
async fn fallback_after_503s_logs_every_try_sqlite() {
    fallback_after_503s_logs_every_try(Db::Sqlite, "fb_sqlite").await;
}

#[tokio::test]
async fn fallback_after_503s_logs_every_try_postgres() {
    fallback_after_503s_logs_every_try(Db::Postgres, "fb_postgres").await;
}

/// A task with `prompt_cache` on: what the provider's cache wrote and read reaches the answer
/// of both routes, the audit log (the columns of migration 0004, on each database), the cost
/// and the token metric.
async fn prompt_cache_counts_reach_answers_and_the_audit_log(db: Db, task: &str) {
    let stub = Stub::start().await;
    let model = "claude-cache";
    let prompt_cache = format!("llm.tasks.{task}.prompt_cache");
    let stack = stack_with(
        db,
        &stub,
        &[Task::new(task, "anthropic:claude-cache")],
        &[
            (prompt_cache.as_str(), "true"),
            ("llm.prices.claude-cache.input_per_mtok", "10"),
            ("llm.prices.claude-cache.output_per_mtok", "20"),
            ("llm.prices.claude-cache.cache_read_per_mtok", "1"),
            ("llm.prices.claude-cache.cache_write_per_mtok", "12.5"),
        ],
    )
    .await;
    stub.push(
        model,
        anthropic_text_cached(model, "Hi.", [40, 2000, 3000, 25]),
    );

    let (status, job_id, answer) = complete(&stack, ask(task)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["usage"],
        json!({"input_tokens": 5040, "output_tokens": 25,
               "cache_read_tokens": 3000, "cache_write_tokens": 2000})
    );
    let expected = (40.0 * 10.0 + 2000.0 * 12.5 + 3000.0 * 1.0 + 25.0 * 20.0) / 1e6;
    let cost = answer["cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost}");
    let system = &stub.seen(model)[0].body["system"];
    assert_eq!(system[0]["cache_control"]["type"], "ephemeral", "{system}");
    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            logs[0].input_tokens,
            logs[0].cache_read_tokens,
            logs[0].cache_write_tokens
        ),
        (5040, 3000, 2000),
        "{db:?}"
    );

    stub.push(
        model,
        anthropic_text_cached(model, "Hi again.", [40, 0, 5000, 25]),
    );
    let response = chat_completion(
        &stack,
        json!({"model": task, "messages": ask(task)["messages"]}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5040, "completion_tokens": 25, "total_tokens": 5065,
               "prompt_tokens_details": {"cached_tokens": 5000, "cache_write_tokens": 0}})
    );

    let text = stack.metrics().await;
    let line = format!(
        r#"xenios_llm_cache_tokens_total{{task="{task}",model="{model}",cache="read"}} 8000"#
    );
    assert!(text.lines().any(|l| l == line), "missing `{line}`");
    // Parts of the input, so not a direction of their own: a sum over `direction` counts
    // every token once.
    assert!(!text.contains(r#"direction="cache_read""#), "{text}");
}

#[tokio::test]
async fn prompt_cache_counts_reach_answers_and_the_audit_log_sqlite() {
    prompt_cache_counts_reach_answers_and_the_audit_log(Db::Sqlite, "pc_sqlite").await;
}

#[tokio::test]
async fn prompt_cache_counts_reach_answers_and_the_audit_log_postgres() {
    prompt_cache_counts_reach_answers_and_the_audit_log(Db::Postgres, "pc_postgres").await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new(
            "ra_task",
            "openai:gpt-busy,anthropic:claude-never",
        )],
        &[],
    )
    .await;
    stub.push(
        "gpt-busy",
        Script::Json {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
        },
    );
    stub.push("gpt-busy", openai_text("gpt-busy", "Patience pays.", 3, 3));

    let (status, _, answer) = complete(&stack, ask("ra_task")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "Patience pays.");
    assert_eq!(answer["fallback_used"], false);
    let seen = stub.seen("gpt-busy");
    let waited = seen[1].at - seen[0].at;
    // The backoff alone is at most 40 ms here.
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert!(stub.seen("claude-never").is_empty());
}

/// A `Retry-After` longer than the gateway waits out itself (`max_retry_after_ms`) is passed
/// to the job: its next try waits for it, not for the runtime's backoff (50 ms here), which
/// would only be refused again.
#[tokio::test]
async fn a_long_retry_after_holds_the_jobs_next_try_back() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new("ra_job_task", "openai:gpt-swamped")],
        &[("llm.retry.max_retry_after_ms", "500")],
    )
    .await;
    stub.push(
        "gpt-swamped",
        Script::Json {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
        },
    );
    stub.push(
        "gpt-swamped",
        openai_text("gpt-swamped", "Worth the wait.", 3, 3),
    );

    let id = stack.submit("llm", ask("ra_job_task")).await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let seen = stub.seen("gpt-swamped");
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "tried again after {waited:?}"
    );
}

#[tokio::test]
async fn a_400_is_not_retried_nor_sent_to_the_fallback() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new(
            "bad_task",
            "openai:gpt-strict,anthropic:claude-never",
        )],
        &[],
    )
    .await;
    stub.push("gpt-strict", openai_error(400, "messages: too long"));

    let response = stack
        .post("/api/v1/llm/complete")
        .json(&ask("bad_task"))
        .send()
        .await
        .unwrap();
    let job_id = job_id_of(&response);
    let body = error_body(response, 400, "invalid_input").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{body}"
    );
    assert_eq!(stub.seen("gpt-strict").len(), 1);
    assert!(stub.seen("claude-never").is_empty());
    let job = stack.job(&job_id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 1, "a permanent failure is not retried");
    assert_eq!(job["error"]["code"], "invalid_input");
    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert!(!logs[0].success);
}

#[tokio::test]
async fn unknown_tasks_and_bad_inputs_are_refused() {
    let stub = Stub::start().await;
    let stack = stack_with(Db::Sqlite, &stub, &[], &[]).await;
    let response = stack
        .post("/api/v1/llm/complete")
        .json(&ask("no_such_task"))
        .send()
        .await
        .unwrap();
    let body = error_body(response, 422, "invalid_input").await;
    assert_eq!(body["error"]["details"][0]["field"], "task", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("task: unknown task"), "{body}");
    let response = stack
        .post("/api/v1/llm/stream")
        .json(&json!({"task": "chat", "messages": []}))
        .send()
        .await
        .unwrap();
    error_body(response, 422, "invalid_input").await;
    // A user route: the API key alone is not enough.
    let response = stack
        .http
        .post(stack.url("/api/v1/llm/complete"))
        .header("X-API-Key", API_KEY)
        .json(&ask("chat"))
        .send()
        .await
        .unwrap();
    error_body(response, 401, "unauthorized").await;

    // A routing table naming an unknown provider stops a consumer at start, naming the key.
    let mut settings = stack.settings.clone();
    settings.llm.tasks.get_mut("chat").unwrap().candidates =
        vec![xenios_config::Candidate::parse("nosuch:model")];
    let error = xenios_cli::runtime_for(&settings, &stack.store, &stack.nats_client, "t", &[])
        .err()
        .expect("a bad routing table is refused");
    assert!(error.to_string().contains("llm.tasks.chat"), "{error}");
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_token_but_not_after() {
    let stub = Stub::start().await;
    let mut before = Task::new("early_task", "openai:gpt-early,anthropic:claude-rescue");
    before.retries = 0;
    let mut after = Task::new("late_task", "openai:gpt-late,anthropic:claude-never");
    after.retries = 0;
    let stack = stack_with(Db::Sqlite, &stub, &[before, after], &[]).await;

    // Broken after the role chunk: no text yet, so the next candidate answers.
    let mut pieces = openai_stream_start("gpt-early", &[]);
    pieces.push(Piece::Break);
    stub.push("gpt-early", Script::Sse(pieces));
    stub.push(
        "claude-rescue",
        anthropic_stream("claude-rescue", &["Saved", "!"], 5, 2),
    );
    let (job_id, reader) = open_stream(&stack, ask("early_task")).await;
    let events = reader.rest().await;
    assert_eq!(tokens(&events), ["Saved", "!"]);
    let done = last_named(&events, "done").json();
    assert_eq!(done["fallback_used"], true);
    assert_eq!(done["model"], "claude-rescue");
    stack.wait_for(&job_id, &["succeeded"], WITHIN).await;

    // Broken after text: the client has part of an answer, so no other candidate is asked
    // and the stream ends with an error. The break waits until the text has reached the
    // client: a server that fails its body can drop what it had not sent yet.
    let go = Arc::new(Notify::new());
    let mut pieces = openai_stream_start("gpt-late", &["Half an"]);
    pieces.push(Piece::BreakOn(go.clone()));
    stub.push("gpt-late", Script::Sse(pieces));
    let (job_id, events) = stream_in_two_halves(&stack, "late_task", &go).await;
    assert_eq!(tokens(&events), ["Half an"]);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    assert_eq!(last.json()["code"], "provider_error");
    assert!(stub.seen("claude-never").is_empty());
    let job = stack.wait_for(&job_id, &["failed"], WITHIN).await;
    assert_eq!(job["attempts"], 1, "{job}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_provider_call() {
    let (stub, stack) = one_task_stack("slow_task", "openai:gpt-slow").await;
    let mut pieces = openai_stream_start("gpt-slow", &["Once upon"]);
    pieces.push(Piece::Hang);
    stub.push("gpt-slow", Script::Sse(pieces));

    let (job_id, mut reader) = open_stream(&stack, ask("slow_task")).await;
    let first = loop {
        let event = reader.next().await.expect("a token");
        if event.event.as_deref() == Some("token") {
            break event;
        }
    };
    assert_eq!(first.json()["text"], "Once upon");
    assert_eq!(stub.aborted(), 0);
    drop(reader);

    eventually(WITHIN, || async { stub.aborted() == 1 }).await;
    let job = stack.wait_for(&job_id, &["cancelled"], WITHIN).await;
    assert_eq!(job["status"], "cancelled");
    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(!logs[0].success);
    // What the provider made before the client left is billed, so it is logged: estimated,
    // as OpenAI's stream reports its usage only at its end.
    let error = logs[0].error.as_deref().unwrap();
    assert!(error.starts_with("cancelled; usage estimated"), "{error}");
    assert!(
        logs[0].input_tokens > 0 && logs[0].output_tokens >= 1,
        "{logs:?}"
    );
    assert!(logs[0].ttft_ms.is_some(), "{logs:?}");
}

/// An `llm` job's provider call starts while its attempt is being recorded (the first token
/// is what callers wait for): its events still follow `running`, in order; and a job cancelled
/// while queued never streams, whatever call was begun is aborted and logged as cancelled.
#[tokio::test]
async fn an_early_started_llm_job_speaks_only_once_recorded() {
    let stub = Stub::start().await;
    let tasks = [
        Task::new("early", "openai:gpt-early"),
        Task::new("later", "openai:gpt-later"),
    ];
    let mut stack = stack_with(Db::Sqlite, &stub, &tasks, &[]).await;
    let mut pieces = openai_stream_start("gpt-early", &["Hel", "lo"]);
    pieces.extend(openai_stream_end("gpt-early", 5, 2, None));
    stub.push("gpt-early", Script::Sse(pieces));
    let mut input = ask("early");
    input["stream"] = json!(true);
    let id = stack.submit("llm", input.clone()).await;
    let events = stack.events(&id, None, WITHIN).await;
    let names: Vec<String> = events
        .iter()
        .map(|e| match e.event.as_deref() {
            Some("status") => e.json()["status"].as_str().unwrap().to_owned(),
            other => other.unwrap_or_default().to_owned(),
        })
        .collect();
    let running = names.iter().position(|n| n == "running").expect("running");
    let first_token = names.iter().position(|n| n == "token").expect("a token");
    assert!(running < first_token, "{names:?}");
    assert_eq!(tokens(&events), ["Hel", "lo"]);
    assert_eq!(
        names.last().map(String::as_str),
        Some("succeeded"),
        "{names:?}"
    );

    // Cancelled while no consumer runs: when one comes, the job is not its to run.
    stack.stop_workers().await;
    let mut pieces = openai_stream_start("gpt-early", &["never"]);
    pieces.push(Piece::Hang);
    stub.push("gpt-early", Script::Sse(pieces));
    let queued = stack.submit("llm", input).await;
    let response = stack.cancel(&queued).await;
    assert_eq!(response.status(), 202);
    stack.start_worker().await;
    // A job submitted after it is done once the consumer has dealt with its command.
    let mut pieces = openai_stream_start("gpt-later", &["ok"]);
    pieces.extend(openai_stream_end("gpt-later", 5, 1, None));
    stub.push("gpt-later", Script::Sse(pieces));
    let mut later = ask("later");
    later["stream"] = json!(true);
    let later = stack.submit("llm", later).await;
    stack.wait_for(&later, &["succeeded"], WITHIN).await;
    let job = stack.wait_for(&queued, &["cancelled"], WITHIN).await;
    assert_eq!(job["attempts"], 0, "{job}");
    let events = stack.events(&queued, None, WITHIN).await;
    assert!(tokens(&events).is_empty(), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| e.event.as_deref() == Some("status") && e.json()["status"] == "running"),
        "{events:?}"
    );
    // The consumer may have begun the call before the store said no: then it was cancelled
    // (before or after reaching the provider), logged as cancelled, and never answered.
    let logs = || async {
        stack
            .store
            .inference_logs_for_job(queued.parse().unwrap())
            .await
            .unwrap()
    };
    eventually(WITHIN, || async {
        stub.seen("gpt-early").len() == 1 + stub.aborted() && logs().await.len() >= stub.aborted()
    })
    .await;
    let logs = logs().await;
    assert!(logs.len() <= 1, "{logs:?}");
    assert!(
        logs.iter().all(|l| !l.success
            && l.error
                .as_deref()
                .is_some_and(|e| e.starts_with("cancelled"))),
        "{logs:?}"
    );
}

/// An `llm` command of the test user for `task`, streamed, as the gateway publishes it, for a
/// job nobody has recorded.
fn streamed_llm_command(task: &str) -> JobCommand {
    let mut input = ask(task);
    input["stream"] = json!(true);
    JobCommand {
        job_id: xenios_contract::new_job_id(),
        kind: JobKind::Llm,
        user_id: Some(USER.into()),
        input,
        submitted_at: chrono::Utc::now(),
    }
}

async fn publish_command(js: &async_nats::jetstream::Context, command: &JobCommand) {
    js.publish_with_headers(
        command.subject(),
        command.headers("test"),
        command.to_bytes(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// The gateway publishes a call's command while it records the job, so a consumer may hold
/// the command before the store holds the job: it waits for the record, the provider call
/// already under way, and then runs the job once. A command whose job never appears is
/// terminated once the wait runs out, and its provider call cancelled.
#[tokio::test]
async fn a_command_ahead_of_its_record_waits_for_it() {
    let stub = Stub::start().await;
    let tasks = [
        Task::new("early", "openai:gpt-early"),
        Task::new("orphan", "openai:gpt-orphan"),
    ];
    let stack = stack_with(Db::Sqlite, &stub, &tasks, &[]).await;
    let js = async_nats::jetstream::new(stack.nats_client.clone());
    let publish = |task: &str| {
        let command = streamed_llm_command(task);
        let js = js.clone();
        async move {
            publish_command(&js, &command).await;
            command
        }
    };
    let mut pieces = openai_stream_start("gpt-orphan", &["never"]);
    pieces.push(Piece::Hang);
    stub.push("gpt-orphan", Script::Sse(pieces));
    let orphan = publish("orphan").await;
    let mut pieces = openai_stream_start("gpt-early", &["Hel", "lo"]);
    pieces.extend(openai_stream_end("gpt-early", 5, 2, None));
    stub.push("gpt-early", Script::Sse(pieces));
    let late = publish("early").await;

    // The call is answered in full before the job exists; nothing of it is told yet.
    eventually(WITHIN, || async { stub.seen("gpt-early").len() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .store
        .create_job(NewJob {
            id: late.job_id,
            kind: JobKind::Llm,
            user_id: late.user_id.clone(),
            input: late.input.clone(),
            correlation_id: "ahead".into(),
            idempotency_key: None,
            webhook_url: None,
        })
        .await
        .unwrap();
    let id = late.job_id.to_string();
    let job = stack.wait_for(&id, &["succeeded"], WITHIN).await;
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["result"]["content"], "Hello", "{job}");
    let events = stack.events(&id, None, WITHIN).await;
    let running = events
        .iter()
        .position(|e| e.event.as_deref() == Some("status") && e.json()["status"] == "running")
        .expect("running");
    let first_token = events
        .iter()
        .position(|e| e.event.as_deref() == Some("token"))
        .expect("a token");
    assert!(running < first_token, "{events:?}");
    assert_eq!(tokens(&events), ["Hel", "lo"]);
    assert_eq!(stub.seen("gpt-early").len(), 1, "the job ran once");

    // The job that never appears: its command is terminated and the hanging call cancelled
    // (the consumer waits 10 s for a record).
    let logs = || async {
        stack
            .store
            .inference_logs_for_job(orphan.job_id)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(30), || async {
        !logs().await.is_empty()
    })
    .await;
    let logs = logs().await;
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(!logs[0].success, "{logs:?}");
    let error = logs[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("cancelled"), "{logs:?}");
    assert!(stack.store.get_job(orphan.job_id).await.unwrap().is_none());
    eventually(WITHIN, || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("JOBS").await.unwrap();
            stream.info().await.unwrap().state.messages == 0
        }
    })
    .await;
}

#[tokio::test]
async fn a_gateway_call_whose_record_fails_takes_its_command_back() {
    let stub = Stub::start().await;
    let tasks = [
        Task::new("refused", "openai:gpt-refused"),
        Task::new("busy", "openai:gpt-busy"),
    ];
    let settings = [
        // One call at a time, so a command can be made to wait in `JOBS`.
        ("jobs.llm.concurrency", "1"),
        // Tries that outlast the test: only a cancellation ends a call in time.
        ("llm.tasks.refused.timeout_ms", "60000"),
        ("llm.tasks.busy.timeout_ms", "60000"),
    ];
    let stack = stack_with(Db::Sqlite, &stub, &tasks, &settings).await;
    // The database refuses this task's jobs; the broker takes their commands all the same.
    refuse_jobs_with(&stack.db_url, JobWrite::Record, "$.task", "refused").await;
    let js = async_nats::jetstream::new(stack.nats_client.clone());
    let broker = || async {
        let mut stream = js.get_stream("JOBS").await.unwrap();
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("llm")
            .await
            .unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        (messages, consumer.info().await.unwrap().num_ack_pending)
    };

    // With the one slot taken, the command waits in `JOBS`: it is removed from there.
    stub.push("gpt-busy", Script::Hang);
    let (_, busy) = open_stream(&stack, ask("busy")).await;
    stub.wait_until("the busy call is made", |s| s.seen("gpt-busy").len() == 1)
        .await;
    let (status, _, answer) = complete(&stack, ask("refused")).await;
    assert!(status >= 500, "{status} {answer}");
    assert_eq!(
        broker().await,
        (1, 1),
        "only the busy call's command is left"
    );
    drop(busy);
    stub.wait_until("the busy call is cancelled", |s| s.aborted() == 1)
        .await;
    eventually(WITHIN, || async { broker().await == (0, 0) }).await;

    // A consumer already looking for the record stops looking, well before its own 10 s wait
    // would end it, and cancels the provider call it began (if it got that far).
    stub.push("gpt-refused", Script::Hang);
    let (status, _, answer) = complete(&stack, ask("refused")).await;
    assert!(status >= 500, "{status} {answer}");
    eventually(Duration::from_secs(7), || async {
        broker().await == (0, 0) && stub.all_seen().len() == stub.aborted()
    })
    .await;
    assert!(stub.seen("gpt-refused").len() <= 1);
    let jobs = stack.store.count_jobs_by_status().await.unwrap();
    assert_eq!(
        jobs,
        [(JobKind::Llm, xenios_contract::JobStatus::Cancelled, 1)],
        "only the busy call was recorded"
    );
}

/// The gateway withdraws a command whose record failed with a cancellation on
/// `ctl.jobs.cancel`, which may reach a consumer before the command does: the consumer
/// remembers it, so the command's wait for its record ends at once (not after 10 s) and a call
/// it began is cancelled.
#[tokio::test]
async fn a_cancellation_heard_before_its_command_is_not_lost() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new("gone", "openai:gpt-gone")],
        &[],
    )
    .await;
    // The consumer has subscribed to cancellations once it has served a call.
    stub.push("gpt-gone", openai_text("gpt-gone", "ready", 1, 1));
    let (status, _, answer) = complete(&stack, ask("gone")).await;
    assert_eq!(status, 200, "{answer}");
    stub.push("gpt-gone", Script::Hang);
    let command = streamed_llm_command("gone");
    let cancel = xenios_contract::envelope::CancelRequest {
        job_id: command.job_id,
    };
    let nats = &stack.nats_client;
    nats.publish(xenios_contract::subjects::CANCEL_SUBJECT, cancel.to_bytes())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    publish_command(&js, &command).await;
    eventually(Duration::from_secs(5), || async {
        let mut stream = js.get_stream("JOBS").await.unwrap();
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("llm")
            .await
            .unwrap();
        let left = (
            stream.info().await.unwrap().state.messages,
            consumer.info().await.unwrap().num_ack_pending,
        );
        left == (0, 0) && stub.all_seen().len() == 1 + stub.aborted()
    })
    .await;
    assert!(stack.store.get_job(command.job_id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_json_schema_answer_is_asked_again_with_feedback() {
    let (stub, stack) = one_task_stack("json_task", "openai:gpt-json").await;
    stub.push(
        "gpt-json",
        openai_text("gpt-json", r#"{"name": 42}"#, 10, 4),
    );
    stub.push(
        "gpt-json",
        openai_text(
            "gpt-json",
            "Here you go:\n```json\n{\"name\": \"Ada\", \"age\": 36}\n```",
            30,
            9,
        ),
    );
    let mut body = ask("json_task");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {
        "name": "person",
        "schema": {"type": "object", "required": ["name", "age"],
                   "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    }});

    let (status, job_id, answer) = complete(&stack, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["parsed"], json!({"name": "Ada", "age": 36}));
    assert_eq!(
        answer["usage"],
        json!({"input_tokens": 40, "output_tokens": 13})
    );
    let seen = stub.seen("gpt-json");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["response_format"]["type"], "json_schema");
    let messages = seen[1].body["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "assistant");
    assert_eq!(messages[n - 2]["content"], r#"{"name": 42}"#);
    assert_eq!(messages[n - 1]["role"], "user");
    let feedback = messages[n - 1]["content"].as_str().unwrap();
    assert!(feedback.contains("not accepted"), "{feedback}");
    let logs = stack
        .store
        .inference_logs_for_job(job_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(logs.len(), 2, "one row per call");
}

// ---- Usage ----

/// `GET /api/v1/llm/usage` as `user`, until its total counts `calls` (the audit log is
/// written beside the answer, not before it).
async fn usage_once_logged(stack: &Stack, user_token: &str, query: &str, calls: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = stack
            .http
            .get(stack.url(&format!("/api/v1/llm/usage{query}")))
            .header("X-API-Key", API_KEY)
            .bearer_auth(user_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let usage: Value = response.json().await.unwrap();
        if usage["total"]["calls"] == calls || Instant::now() > deadline {
            return usage;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user sees what their own LLM calls consumed and cost; `service_role` sees everyone's,
/// service calls without a user included; another user's usage is forbidden to others.
#[tokio::test]
async fn usage_sums_the_callers_llm_calls() {
    let (stub, stack) = one_task_stack("us_task", "openai:gpt-us").await;
    stub.push("gpt-us", openai_text("gpt-us", "One.", 12, 3));
    let (status, _, answer) = complete(&stack, ask("us_task")).await;
    assert_eq!(status, 200, "{answer}");
    // A service call: an SDK's bearer API key, no user.
    stub.push("gpt-us", openai_text("gpt-us", "Two.", 20, 5));
    let response = chat_completion(
        &stack,
        json!({"model": "us_task", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);

    let own = usage_once_logged(&stack, &stack.token(USER), "", 1).await;
    assert_eq!(own["user_id"], USER);
    assert!(own.get("daily_budget").is_none(), "no budget is set: {own}");
    assert_eq!(
        own["total"],
        json!({"requests": 1, "calls": 1, "failed_calls": 0, "input_tokens": 12,
               "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 0,
               "cost_usd": 0.0})
    );
    assert_eq!(own["by_model"][0]["task"], "us_task");
    assert_eq!(own["by_model"][0]["model"], "gpt-us");
    assert_eq!(own["by_model"][0]["calls"], 1);
    let since = own["since"].as_str().unwrap();
    let until = own["until"].as_str().unwrap();
    let days = chrono::DateTime::parse_from_rfc3339(until).unwrap()
        - chrono::DateTime::parse_from_rfc3339(since).unwrap();
    assert_eq!(days.num_days(), 30, "the default window");

    let admin = token_for("an-operator", "service_role");
    let everyone = usage_once_logged(&stack, &admin, "", 2).await;
    assert_eq!(everyone["user_id"], Value::Null);
    assert_eq!(everyone["total"]["requests"], 2);
    assert_eq!(everyone["total"]["input_tokens"], 32);
    // Per user too, costliest first (both cost 0 here: then the most calls, users first).
    let users: Vec<_> = everyone["by_user"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user_id"].clone(),
                u["calls"].clone(),
                u["input_tokens"].clone(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            (json!(USER), json!(1), json!(12)),
            (Value::Null, json!(1), json!(20))
        ],
        "{everyone}"
    );
    assert!(own.get("by_user").is_none(), "one user's report: {own}");
    let theirs = usage_once_logged(&stack, &admin, &format!("?user_id={USER}"), 1).await;
    assert_eq!(theirs["total"]["input_tokens"], 12);
    assert!(theirs.get("by_user").is_none());

    // A window without the calls.
    let before = "?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z";
    let empty = usage_once_logged(&stack, &stack.token(USER), before, 0).await;
    assert_eq!(empty["total"]["calls"], 0);
    assert_eq!(empty["by_model"], json!([]));

    for (query, status, field) in [
        (&*format!("?user_id={OTHER_USER}"), 403, None),
        ("?since=yesterday", 422, Some("since")),
        ("?until=2026-13-01T00:00:00Z", 422, Some("until")),
        (
            "?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            422,
            Some("since"),
        ),
        (
            "?since=2024-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            422,
            Some("since"),
        ),
        ("?group=model", 400, None),
    ] {
        let response = stack
            .get(&format!("/api/v1/llm/usage{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        let body: Value = response.json().await.unwrap();
        if let Some(field) = field {
            assert_eq!(
                body["error"]["details"][0]["field"], field,
                "{query}: {body}"
            );
        }
    }
}

/// With `llm.user_daily_budget_usd`, a user whose calls today cost the budget has their LLM
/// requests refused on every route (`429`, until midnight UTC); calls without a user and
/// `service_role` callers are not limited; the usage report shows the day's spending.
#[tokio::test]
async fn a_spent_daily_budget_refuses_the_users_llm_requests() {
    let stub = Stub::start().await;
    let stack = stack_with(
        Db::Sqlite,
        &stub,
        &[Task::new("bud_task", "openai:gpt-bud")],
        &[
            ("llm.user_daily_budget_usd", "0.01"),
            // 12 input tokens at $1000 per million: $0.012, past the budget in one call.
            ("llm.prices.gpt-bud.input_per_mtok", "1000"),
            ("llm.prices.gpt-bud.output_per_mtok", "0"),
        ],
    )
    .await;
    stub.push("gpt-bud", openai_text("gpt-bud", "Spent.", 12, 3));
    let job = json!({"kind": "llm", "input": ask("bud_task")});
    let keyed = || {
        stack
            .post("/api/v1/jobs")
            .header("Idempotency-Key", "spend-once")
            .json(&job)
            .send()
    };
    let response = keyed().await.unwrap();
    assert_eq!(response.status(), 202);
    let made: Value = response.json().await.unwrap();
    let made = made["job_id"].as_str().unwrap().to_owned();
    stack
        .wait_for(&made, &["succeeded"], Duration::from_secs(20))
        .await;
    let usage = usage_once_logged(&stack, &stack.token(USER), "", 1).await;
    let budget = &usage["daily_budget"];
    assert_eq!(budget["limit_usd"], 0.01, "{usage}");
    assert!((budget["spent_usd"].as_f64().unwrap() - 0.012).abs() < 1e-12);
    let resets_at = budget["resets_at"].as_str().unwrap();
    assert!(resets_at.ends_with("T00:00:00Z"), "{resets_at}");

    let refused = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 429);
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&wait), "{wait}");
        response.json::<Value>().await.unwrap()
    };
    let body = refused(
        stack
            .post("/api/v1/llm/complete")
            .json(&ask("bud_task"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("daily LLM budget of $0.01"), "{message}");
    let body = refused(
        stack
            .post("/api/v1/llm/stream")
            .json(&ask("bud_task"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["error"]["code"], "rate_limited");
    let body = refused(stack.post("/api/v1/jobs").json(&job).send().await.unwrap()).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    // The submission that spent it, retried with its key (its answer lost), gets its job.
    let response = keyed().await.unwrap();
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["job_id"], made.as_str());
    let chat = json!({"model": "bud_task", "messages": [{"role": "user", "content": "Hi"}]});
    let as_user = stack.authed(stack.http.post(stack.url("/v1/chat/completions")), USER);
    let body = refused(as_user.json(&chat).send().await.unwrap()).await;
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    // Other kinds are not LLM spending.
    let echo = json!({"kind": "echo", "input": {"message": "still here"}});
    let response = stack.post("/api/v1/jobs").json(&echo).send().await.unwrap();
    assert_eq!(response.status(), 202);

    // A service call, and a service_role caller, are not limited.
    stub.push("gpt-bud", openai_text("gpt-bud", "Service.", 12, 3));
    let response = chat_completion(&stack, chat.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    stub.push("gpt-bud", openai_text("gpt-bud", "Admin.", 12, 3));
    let response = stack
        .http
        .post(stack.url("/api/v1/llm/complete"))
        .header("X-API-Key", API_KEY)
        .bearer_auth(token_for(OTHER_USER, "service_role"))
        .json(&ask("bud_task"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        stub.seen("gpt-bud").len(),
        3,
        "no refused request reached the provider"
    );

    // A plan's own budget, in the token's app_metadata, replaces the server's: a larger one
    // lets the user on, 0 allows nothing at all (403: no day renews it).
    let with_plan = |usd: f64| {
        let token = token_with_app_metadata(USER, json!({"llm_daily_budget_usd": usd}));
        stack
            .http
            .post(stack.url("/api/v1/llm/complete"))
            .header("X-API-Key", API_KEY)
            .bearer_auth(token)
            .json(&ask("bud_task"))
    };
    stub.push("gpt-bud", openai_text("gpt-bud", "Plan.", 12, 3));
    let response = with_plan(5.0).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let token = token_with_app_metadata(USER, json!({"llm_daily_budget_usd": 5.0}));
    let usage = usage_once_logged(&stack, &token, "", 2).await;
    assert_eq!(usage["daily_budget"]["limit_usd"], 5.0, "{usage}");
    let response = with_plan(0.0).send().await.unwrap();
    let body = error_body(response, 403, "forbidden").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("llm_daily_budget_usd"), "{message}");
    assert_eq!(stub.seen("gpt-bud").len(), 4);
}

/// A user who erases their data does not get their day's LLM budget back: what the day's
/// calls cost stays (without the calls) until the day is over.
async fn erasing_ones_data_keeps_the_days_spending(db: Db, task: &str) {
    let stub = Stub::start().await;
    let model = format!("gpt-{task}");
    let stack = stack_with(
        db,
        &stub,
        &[Task::new(task, &format!("openai:{model}"))],
        &[
            ("llm.user_daily_budget_usd", "0.01"),
            // 12 input tokens at $1000 per million: $0.012, past the budget in one call.
            (&format!("llm.prices.{model}.input_per_mtok"), "1000"),
            (&format!("llm.prices.{model}.output_per_mtok"), "0"),
        ],
    )
    .await;
    stub.push(&model, openai_text(&model, "Spent.", 12, 3));
    let response = stack
        .post("/api/v1/llm/complete")
        .json(&ask(task))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    usage_once_logged(&stack, &stack.token(USER), "", 1).await;

    let deadline = Instant::now() + WITHIN;
    let erased = loop {
        let (_, erased) = stack.erase_user(USER, USER).await;
        if erased["complete"] == true {
            break erased;
        }
        assert!(Instant::now() < deadline, "{erased}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(erased["inference_logs_deleted"], 1, "{erased}");

    let response = stack
        .post("/api/v1/llm/complete")
        .json(&ask(task))
        .send()
        .await
        .unwrap();
    let body = error_body(response, 429, "rate_limited").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("daily LLM budget"), "{message}");
    assert_eq!(
        stub.seen(&model).len(),
        1,
        "the refused call reached no provider"
    );
    // The usage report shows the day's spending, and none of the calls behind it.
    let usage = usage_once_logged(&stack, &stack.token(USER), "", 1).await;
    assert!((usage["daily_budget"]["spent_usd"].as_f64().unwrap() - 0.012).abs() < 1e-12);
    assert_eq!(usage["total"]["requests"], 0, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 0, "{usage}");
    let by_model = usage["by_model"].as_array().unwrap();
    assert_eq!(by_model.len(), 1, "{usage}");
    assert_eq!(by_model[0]["model"], xenios_store::ERASED, "{usage}");
}

#[tokio::test]
async fn erasing_ones_data_keeps_the_days_spending_sqlite() {
    erasing_ones_data_keeps_the_days_spending(Db::Sqlite, "erase_sqlite").await;
}

#[tokio::test]
async fn erasing_ones_data_keeps_the_days_spending_postgres() {
    erasing_ones_data_keeps_the_days_spending(Db::Postgres, "erase_postgres").await;
}

// ---- The OpenAI-compatible route ----

/// The chunks of a streamed `/v1/chat/completions` answer, which ends with `data: [DONE]`.
async fn chunks_of(response: reqwest::Response) -> Vec<Value> {
    let events = SseReader::new(response).rest().await;
    let (done, chunks) = events.split_last().expect("a stream of chunks");
    assert_eq!(done.data, "[DONE]");
    chunks
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_completions_speaks_openai_shapes() {
    let (stub, stack) = one_task_stack("oc_task", "openai:gpt-oc").await;
    let url = stack.url("/v1/chat/completions");
    let messages = json!([{"role": "user", "content": "Hi"}]);

    stub.push("gpt-oc", openai_text("gpt-oc", "Hello!", 3, 2));
    let response = stack
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(
            &json!({"model": "xenios/oc_task", "messages": messages, "stop": "\n",
                      "top_p": 0.25, "seed": 7, "presence_penalty": 0.5,
                      "frequency_penalty": -1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let upstream = &stub.seen("gpt-oc")[0].body;
    // One stop sequence as a string, as SDKs allow, goes upstream as a list.
    assert_eq!(upstream["stop"], json!(["\n"]));
    for (field, value) in [
        ("top_p", json!(0.25)),
        ("seed", json!(7)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-1.0)),
    ] {
        assert_eq!(upstream[field], value, "{field}: {upstream}");
    }
    assert_eq!(body["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
               "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}})
    );
    let job_id = body["id"]
        .as_str()
        .unwrap()
        .strip_prefix("chatcmpl-")
        .unwrap();
    let job = stack
        .store
        .get_job(job_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.user_id, None, "an API-key call has no user");

    stub.push(
        "gpt-oc",
        openai_stream("gpt-oc", &["Hel", "lo"], 3, 2, None),
    );
    let response = stack
        .http
        .post(&url)
        .header("X-API-Key", API_KEY)
        .bearer_auth(stack.token(USER))
        .json(&json!({"model": "oc_task", "messages": messages, "stream": true}))
        .send()
        .await
        .unwrap();
    let job_id = job_id_of(&response);
    let chunks = chunks_of(response).await;
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["total_tokens"], 5);
    let job = stack
        .store
        .get_job(job_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.user_id.as_deref(),
        Some(USER),
        "the bearer JWT names the user"
    );

    // An answer that `max_tokens` cut short says so, whole and streamed.
    stub.push("gpt-oc", cut_short(openai_text("gpt-oc", "Hel", 3, 1)));
    let ask_short = |stream: bool| json!({"model": "oc_task", "messages": messages, "max_tokens": 1, "stream": stream});
    let response = stack
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&ask_short(false))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    stub.push(
        "gpt-oc",
        cut_short(openai_stream("gpt-oc", &["Hel"], 3, 1, None)),
    );
    let response = stack
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&ask_short(true))
        .send()
        .await
        .unwrap();
    let events = SseReader::new(response).rest().await;
    let last: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length", "{last}");

    // The tasks are the models.
    let get = |path: &str| stack.http.get(stack.url(path)).bearer_auth(API_KEY).send();
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "oc_task" && m["object"] == "model"),
        "{models}"
    );
    for path in [
        "/v1/models/oc_task",
        "/v1/models/xenios/oc_task",
        "/v1/models/xenios%2Foc_task",
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let model: Value = response.json().await.unwrap();
        assert_eq!(model["id"], "oc_task", "{path}");
    }
    let response = get("/v1/models/gpt-4o").await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    // A name that is not UTF-8 is refused in OpenAI's shape too.
    let response = get("/v1/models/%FF").await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");
    let response = stack
        .http
        .get(stack.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // OpenAI's error shape.
    for (extra, status, param) in [
        (json!({"stop": 5}), 400, "stop"),
        (json!({"stop": ["a", ""]}), 422, "stop[1]"),
        (json!({"top_p": 1.5}), 422, "top_p"),
        (json!({"presence_penalty": -3}), 422, "presence_penalty"),
    ] {
        let mut request = json!({"model": "oc_task", "messages": messages});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = stack
            .http
            .post(&url)
            .bearer_auth(API_KEY)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{extra}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let response = stack
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&json!({"model": "gpt-4o", "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], "model");
    assert_eq!(body["error"]["code"], "invalid_input");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("oc_task"));
    for request in [
        stack.http.post(&url),
        stack.http.post(&url).bearer_auth("not-the-key-0123456789"),
    ] {
        let response = request
            .json(&json!({"model": "oc_task", "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error", "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let response = stack
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}])
}

const ROME_AND_OSLO: [StubCall<'static>; 2] = [
    StubCall("call_rome", "get_weather", &["{\"city\":", " \"Rome\"}"]),
    StubCall("call_oslo", "get_weather", &["{\"ci", "ty\": \"Oslo\"}"]),
];

/// The calls of `ROME_AND_OSLO` as OpenAI's API gives them.
fn rome_and_oslo_calls() -> Value {
    json!([
        {"id": "call_rome", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}},
        {"id": "call_oslo", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
    ])
}

/// The calls a `/v1` stream's `delta.tool_calls` pieces make, put together as the SDKs do (a
/// call's first piece names it, the rest add to its arguments), and how many pieces there were.
fn calls_from_deltas(chunks: &[Value]) -> (Value, usize) {
    let mut calls: Vec<Value> = Vec::new();
    let mut pieces = 0;
    for chunk in chunks {
        let deltas = chunk["choices"][0]["delta"]["tool_calls"].as_array();
        for delta in deltas.into_iter().flatten() {
            pieces += 1;
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert!(
                    delta["id"].is_string(),
                    "a call's first piece names it: {delta}"
                );
                calls.push(json!({"id": delta["id"], "type": delta["type"],
                                  "function": {"name": delta["function"]["name"],
                                               "arguments": ""}}));
            }
            let arguments = calls[index]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
                + delta["function"]["arguments"].as_str().unwrap_or_default();
            calls[index]["function"]["arguments"] = arguments.into();
        }
    }
    (Value::Array(calls), pieces)
}

/// The provider was sent the question, the calls and their results in OpenAI's shapes.
fn assert_second_turn_sent(messages: &Value) {
    assert_eq!(
        messages,
        &json!([
            {"role": "user", "content": "Weather in Rome and Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": rome_and_oslo_calls()},
            {"role": "tool", "content": "24°C", "tool_call_id": "call_rome"},
            {"role": "tool", "content": "9°C", "tool_call_id": "call_oslo"},
        ])
    );
}

/// A tool-calling round trip through `/v1/chat/completions`: the calls whole, then streamed
/// (one chunk of whole calls before the finishing one), then the second turn with the tools'
/// results; the provider is sent each in OpenAI's shapes. `/api/v1/llm/*` answers carry the
/// calls too, and a bad tool or result is refused naming its field.
#[tokio::test]
async fn chat_completions_call_tools() {
    let (stub, stack) = one_task_stack("tool_task", "openai:gpt-tool").await;
    let question = json!({"role": "user", "content": "Weather in Rome and Oslo?"});
    let post = |body: Value| chat_completion(&stack, body);

    stub.push(
        "gpt-tool",
        openai_tool_calls("gpt-tool", &ROME_AND_OSLO, 20, 9),
    );
    let response = post(json!({"model": "tool_task", "messages": [question],
                               "tools": weather_tools(), "tool_choice": "auto",
                               "parallel_tool_calls": true}))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    assert_eq!(choice["message"]["tool_calls"], rome_and_oslo_calls());
    let upstream = &stub.seen("gpt-tool")[0].body;
    assert_eq!(upstream["tools"], weather_tools());
    assert_eq!(upstream["tool_choice"], "auto");
    assert_eq!(upstream["parallel_tool_calls"], true);

    stub.push(
        "gpt-tool",
        openai_tool_stream("gpt-tool", &ROME_AND_OSLO, 20, 9),
    );
    let response = post(json!({"model": "tool_task", "messages": [question],
                               "tools": weather_tools(), "stream": true}))
    .await
    .unwrap();
    let chunks = chunks_of(response).await;
    // A chunk per piece, as the provider gave them: two calls of a first and two more pieces.
    let (calls, pieces) = calls_from_deltas(&chunks);
    assert_eq!(calls, rome_and_oslo_calls(), "{chunks:?}");
    assert_eq!(pieces, 6, "{chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(last["usage"]["total_tokens"], 29);

    // The second turn: the calls, then their results.
    stub.push(
        "gpt-tool",
        openai_text("gpt-tool", "Rome 24°C, Oslo 9°C.", 40, 8),
    );
    let turn = json!([
        question,
        {"role": "assistant", "content": null, "tool_calls": rome_and_oslo_calls()},
        {"role": "tool", "tool_call_id": "call_rome", "content": "24°C"},
        {"role": "tool", "tool_call_id": "call_oslo",
         "content": [{"type": "text", "text": "9°C"}]},
    ]);
    let response = post(json!({"model": "tool_task", "messages": turn,
                               "tools": weather_tools()}))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Rome 24°C, Oslo 9°C.", "{body}");
    assert!(message.get("tool_calls").is_none(), "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_second_turn_sent(&stub.seen("gpt-tool")[2].body["messages"]);

    // The gateway's own routes carry the calls too.
    let ask_tools = json!({"task": "tool_task", "messages": [question],
                           "tools": weather_tools(), "tool_choice": "required"});
    stub.push(
        "gpt-tool",
        openai_tool_calls("gpt-tool", &ROME_AND_OSLO, 20, 9),
    );
    let (status, _, answer) = complete(&stack, ask_tools.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tool_calls"], rome_and_oslo_calls());
    assert_eq!(answer["finish_reason"], "tool_calls");
    stub.push(
        "gpt-tool",
        openai_tool_stream("gpt-tool", &ROME_AND_OSLO, 20, 9),
    );
    let (_, reader) = open_stream(&stack, ask_tools).await;
    let events = reader.rest().await;
    let done = last_named(&events, "done").json();
    assert_eq!(done["tool_calls"], rome_and_oslo_calls(), "{done}");
    assert_eq!(done["finish_reason"], "tool_calls");
    assert_eq!(stub.seen("gpt-tool")[3].body["tool_choice"], "required");

    // Refused with OpenAI's error shape, naming the field; nothing reaches the provider.
    let bad_tool = json!([{"type": "function", "function": {"name": "get weather"}}]);
    let orphan = json!([question, {"role": "tool", "tool_call_id": "call_x", "content": "?"}]);
    for (request, status, param) in [
        (
            json!({"messages": [question], "tools": bad_tool}),
            422,
            "tools[0].function.name",
        ),
        (
            json!({"messages": [question], "tools": weather_tools(),
                   "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            422,
            "tool_choice",
        ),
        (json!({"messages": orphan}), 422, "messages[1].tool_call_id"),
        (
            json!({"messages": [question], "functions": [{"name": "get_weather"}]}),
            400,
            "functions",
        ),
    ] {
        let mut request = request;
        request["model"] = "tool_task".into();
        let response = post(request.clone()).await.unwrap();
        assert_eq!(response.status(), status, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
        assert_eq!(body["error"]["code"], "invalid_input", "{body}");
    }
    assert_eq!(stub.seen("gpt-tool").len(), 5);
}

/// Pictures reach both providers in their own shapes: OpenAI's `image_url` parts as they came
/// (pictures first), Anthropic's `image` blocks, an inline one with the type its bytes show; the
/// gateway's own route takes them as `images`. An upload named by its `file_id` goes out inline.
/// A picture in the wrong place or of the wrong kind, or someone else's upload, is refused
/// naming the part, before any provider call.
#[tokio::test]
async fn pictures_reach_both_providers() {
    let stub = Stub::start().await;
    let tasks = [
        Task::new("eye_oa", "openai:gpt-eye"),
        Task::new("eye_an", "anthropic:claude-eye"),
    ];
    let stack = stack_with(Db::Sqlite, &stub, &tasks, &[]).await;
    let post = |body: Value| chat_completion(&stack, body);
    // The first 24 bytes of a PNG, labelled JPEG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB";
    let inline = format!("data:image/jpeg;base64,{png}");
    let cat = "https://example.com/cat.png";
    let question = json!({"role": "user", "content": [
        {"type": "text", "text": "What is "},
        {"type": "image_url", "image_url": {"url": cat, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": inline}},
        {"type": "text", "text": "in these?"},
    ]});

    stub.push("gpt-eye", openai_text("gpt-eye", "A cat.", 900, 3));
    let response = post(json!({"model": "eye_oa", "messages": [question]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        stub.seen("gpt-eye")[0].body["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": cat, "detail": "low"}},
            {"type": "image_url", "image_url": {"url": inline}},
            {"type": "text", "text": "What is in these?"},
        ]}])
    );

    let pixel = json!({"type": "image", "source": {"type": "base64",
                                                   "media_type": "image/png", "data": png}});
    stub.push("claude-eye", anthropic_text("claude-eye", "A cat.", 900, 3));
    let response = post(json!({"model": "eye_an", "messages": [question]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "A cat.", "{body}");
    assert_eq!(
        stub.seen("claude-eye")[0].body["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "url", "url": cat}},
            pixel,
            {"type": "text", "text": "What is in these?"},
        ])
    );

    // The gateway's route: a message of pictures alone.
    stub.push(
        "claude-eye",
        anthropic_text("claude-eye", "A pixel.", 900, 3),
    );
    let only_pictures = json!({"task": "eye_an", "messages": [
        {"role": "user", "images": [{"url": inline}]}]});
    let (status, _, answer) = complete(&stack, only_pictures).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "A pixel.");
    assert_eq!(
        stub.seen("claude-eye")[1].body["messages"][0]["content"],
        json!([pixel])
    );

    // An upload, named by its id, is read by the consumer and sent inline as what it is.
    let gif = b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!\xf9\x04\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;";
    let uploaded: Value = stack
        .upload_as(USER, "pixel.gif", gif.to_vec())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(uploaded["content_type"], "image/gif", "{uploaded}");
    let file_id = uploaded["file_id"].as_str().unwrap();
    let gif_base64 = BASE64.encode(gif);
    stub.push("gpt-eye", openai_text("gpt-eye", "A GIF.", 900, 3));
    let by_file = json!({"model": "eye_oa", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": file_id}},
        {"type": "text", "text": "And this?"},
    ]}]});
    let response = post(by_file).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        stub.seen("gpt-eye")[1].body["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": format!("data:image/gif;base64,{gif_base64}")}},
            {"type": "text", "text": "And this?"},
        ])
    );
    stub.push("claude-eye", anthropic_text("claude-eye", "A GIF.", 900, 3));
    let (status, _, answer) = complete(
        &stack,
        json!({"task": "eye_an", "messages": [
            {"role": "user", "images": [{"file_id": file_id, "detail": "high"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        stub.seen("claude-eye")[2].body["messages"][0]["content"],
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/gif",
                                            "data": gif_base64}}])
    );
    // Only the caller's own pictures.
    let theirs: Value = stack
        .upload_as(OTHER_USER, "theirs.gif", gif.to_vec())
        .await
        .json()
        .await
        .unwrap();
    let notes: Value = stack
        .upload_as(USER, "notes.txt", b"not a picture".to_vec())
        .await
        .json()
        .await
        .unwrap();
    for file_id in [
        &theirs["file_id"],
        &notes["file_id"],
        &json!("no-such-file"),
    ] {
        let (status, _, body) = complete(
            &stack,
            json!({"task": "eye_an", "messages": [
                {"role": "user", "content": "?", "images": [{"file_id": file_id}]}]}),
        )
        .await;
        assert_eq!(status, 422, "{file_id}: {body}");
        assert_eq!(
            body["error"]["details"][0]["field"], "messages[0].images[0].file_id",
            "{body}"
        );
    }

    // The OpenAI-compatible route (a service caller here, who may use any upload) names the
    // part of its own request.
    for file_id in [&notes["file_id"], &json!("no-such-file")] {
        let response = post(json!({"model": "eye_oa", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "?"},
                {"type": "image_url", "image_url": {"url": cat}},
                {"type": "file", "file": {"file_id": file_id}}]}]}))
        .await
        .unwrap();
        assert_eq!(response.status(), 422, "{file_id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["param"], "messages[0].content[2].file",
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("messages[0].content[2].file: "),
            "{body}"
        );
    }

    let picture = json!({"type": "image_url", "image_url": {"url": cat}});
    for (messages, param) in [
        (
            json!([{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": [picture]}]),
            "messages[1].content",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "data:image/png;base64,PHN2Zz4="}}]}]),
            "messages[0].content[0].image_url",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "file:///etc/passwd"}}]}]),
            "messages[0].content[0].image_url",
        ),
        (
            json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"role": "user", "content": vec![picture.clone(); 21]}]),
            "messages[0].content[20]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "file",
                    "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}}]}]),
            "messages[0].content[0].file",
        ),
    ] {
        let response = post(json!({"model": "eye_oa", "messages": messages}))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{messages}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
        assert_eq!(body["error"]["code"], "invalid_input", "{body}");
    }
    let shown_by_system = json!({"task": "eye_an", "messages": [
        {"role": "system", "content": "Look.", "images": [{"url": cat}]},
        {"role": "user", "content": "What is it?"}]});
    let (status, _, body) = complete(&stack, shown_by_system).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "messages[0].images");
    assert_eq!(stub.all_seen().len(), 5);
}

/// Anthropic's streamed `tool_use` blocks reach a `/v1` stream as OpenAI's pieces: the text
/// first, then each call named in its first piece and its `input_json_delta` pieces after.
/// `/api/v1/llm/stream` keeps to text and gives the calls whole in `done`.
#[tokio::test]
async fn anthropic_tool_calls_stream_as_openai_pieces() {
    let (stub, stack) = one_task_stack("an_tools", "anthropic:claude-tool").await;
    let question = json!({"role": "user", "content": "Weather in Rome and Oslo?"});
    stub.push(
        "claude-tool",
        anthropic_tool_stream("claude-tool", &["Checking."], &ROME_AND_OSLO),
    );
    let response = chat_completion(
        &stack,
        json!({"model": "an_tools", "messages": [question],
                      "tools": weather_tools(), "stream": true}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let chunks = chunks_of(response).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Checking.");
    let (calls, pieces) = calls_from_deltas(&chunks);
    assert_eq!(calls, rome_and_oslo_calls(), "{chunks:?}");
    assert_eq!(pieces, 6, "{chunks:?}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    stub.push(
        "claude-tool",
        anthropic_tool_stream("claude-tool", &["Checking."], &ROME_AND_OSLO),
    );
    let (_, reader) = open_stream(
        &stack,
        json!({"task": "an_tools", "messages": [question], "tools": weather_tools()}),
    )
    .await;
    let events = reader.rest().await;
    assert_eq!(tokens(&events), ["Checking."]);
    let done = last_named(&events, "done").json();
    // Whole, as Anthropic's input is given back: compact JSON.
    let compact = json!([
        {"id": "call_rome", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
        {"id": "call_oslo", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
    ]);
    assert_eq!(done["tool_calls"], compact, "{done}");
}

/// The Python the SDK test runs: `XENIOS_TEST_PYTHON` (set by `make test`), else the
/// repository's `.venv` that `make test` (or `scripts/ensure-venv.sh`) made. Never skipped:
/// without it the test fails and says how to get it.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("XENIOS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let works = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "the OpenAI SDK test needs a Python with the `openai` package: run `make test`, or \
         `scripts/ensure-venv.sh` and set XENIOS_TEST_PYTHON to the path it prints \
         (tried {})",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_against_chat_completions() {
    let python = sdk_python();
    let (stub, stack) = one_task_stack("sdk", "openai:gpt-sdk").await;
    stub.push(
        "gpt-sdk",
        with_cached_prompt(openai_text("gpt-sdk", "Hello from the stub.", 11, 5), 6, 0),
    );
    stub.push(
        "gpt-sdk",
        openai_stream("gpt-sdk", &["Str", "eam", "ed."], 8, 3, None),
    );
    stub.push("gpt-sdk", openai_text("gpt-sdk", "Yours.", 2, 1));
    stub.push(
        "gpt-sdk",
        openai_tool_calls("gpt-sdk", &ROME_AND_OSLO, 20, 9),
    );
    stub.push(
        "gpt-sdk",
        openai_tool_stream("gpt-sdk", &ROME_AND_OSLO, 20, 9),
    );
    stub.push(
        "gpt-sdk",
        openai_text("gpt-sdk", "Rome 24°C, Oslo 9°C.", 40, 8),
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_sdk.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(&stack.base)
        .arg(API_KEY)
        .arg(stack.token(USER))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK script failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    let complete = &report["complete"];
    assert_eq!(complete["content"], "Hello from the stub.", "{report}");
    assert_eq!(complete["object"], "chat.completion");
    assert_eq!(complete["finish_reason"], "stop");
    assert_eq!(complete["usage"]["prompt_tokens"], 11);
    assert_eq!(complete["usage"]["completion_tokens"], 5);
    // The SDK's own type reads what the provider's cache served.
    assert_eq!(
        complete["usage"]["prompt_tokens_details"]["cached_tokens"],
        6
    );

    let stream = &report["stream"];
    assert_eq!(stream["deltas"], json!(["Str", "eam", "ed."]), "{report}");
    assert_eq!(stream["finish_reason"], "stop");
    assert_eq!(stream["usage"]["total_tokens"], 11);
    assert_eq!(stream["objects"], json!(["chat.completion.chunk"]));
    assert_eq!(
        stream["ids"].as_array().unwrap().len(),
        1,
        "one id per stream"
    );

    let user = &report["user"];
    assert_eq!(user["content"], "Yours.");
    let job_id = user["id"]
        .as_str()
        .unwrap()
        .strip_prefix("chatcmpl-")
        .unwrap();
    assert_eq!(stack.job(job_id).await["user_id"], USER);

    // The tasks are the models; `xenios/<task>` names one too.
    assert!(
        report["models"].as_array().unwrap().contains(&json!("sdk")),
        "{report}"
    );
    assert_eq!(report["model"], "sdk", "{report}");
    assert_eq!(report["missing_model"]["status"], 404, "{report}");
    assert_eq!(report["unknown_model"]["status"], 400, "{report}");
    assert_eq!(report["unknown_model"]["code"], "invalid_input");
    assert_eq!(report["unknown_model"]["param"], "model");
    assert_eq!(report["bad_key"]["status"], 401, "{report}");
    assert_eq!(report["bad_key"]["type"], "authentication_error");
    // A tool-call round trip: the calls whole and put together from the streamed deltas,
    // then the SDK's own message and the results sent back.
    let tools = &report["tools"];
    let calls = json!([
        {"id": "call_rome", "name": "get_weather", "arguments": {"city": "Rome"}},
        {"id": "call_oslo", "name": "get_weather", "arguments": {"city": "Oslo"}},
    ]);
    assert_eq!(tools["complete"]["finish_reason"], "tool_calls", "{report}");
    assert_eq!(tools["complete"]["content"], Value::Null);
    assert_eq!(tools["complete"]["types"], json!(["function"]));
    assert_eq!(tools["complete"]["calls"], calls);
    assert_eq!(tools["stream"]["finish_reason"], "tool_calls", "{report}");
    assert_eq!(tools["stream"]["indexes"], json!([0, 1]));
    assert_eq!(tools["stream"]["calls"], calls);
    assert_eq!(tools["answer"]["content"], "Rome 24°C, Oslo 9°C.");
    assert_eq!(tools["answer"]["finish_reason"], "stop");
    assert_eq!(tools["answer"]["tool_calls"], Value::Null);

    let seen = stub.seen("gpt-sdk");
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[3].body["tools"], weather_tools());
    assert_eq!(seen[3].body["tool_choice"], "auto");
    assert_second_turn_sent(&seen[5].body["messages"]);
    assert_eq!(
        seen[2].body["messages"][0]["content"],
        json!([
            {"type": "image_url",
             "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "text", "text": "Hi, what is this?"},
        ])
    );
    // The SDK's sampling arguments reach the provider.
    let streamed = &seen[1].body;
    assert_eq!(streamed["stream"], true, "{streamed}");
    assert_eq!(
        (
            &streamed["top_p"],
            &streamed["seed"],
            &streamed["frequency_penalty"]
        ),
        (&json!(0.9), &json!(11), &json!(0.5)),
        "{streamed}"
    );
}
