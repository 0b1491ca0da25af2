//! Retries, fallback, cancellation and JSON-schema answers, over real HTTP.
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use support::*;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xenios_config::ProviderSettings;
use xenios_llm::{LlmError, LlmGateway, LlmRequest, StreamEvent};

fn gateway(stub: &Stub, tasks: Vec<(&str, xenios_llm::TaskSettings)>) -> LlmGateway {
    LlmGateway::new(&settings(tasks), &providers(stub)).unwrap()
}

#[tokio::test]
async fn a_primary_that_keeps_answering_503_falls_back_after_its_retries() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "openai:backup"]))],
    );
    for _ in 0..3 {
        stub.push("primary", openai_error(503, "upstream overloaded"));
    }
    stub.push("backup", openai_text("backup", "from backup", 5, 2));

    let calls = Calls::default();
    let result = gw
        .complete(request("chat"), &calls, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(result.content, "from backup");
    assert!(result.fallback_used);
    assert_eq!(
        (result.provider.as_str(), result.model.as_str()),
        ("openai", "backup")
    );
    assert_eq!(stub.seen("primary").len(), 3, "first try and two retries");
    let records = calls.all();
    let summary: Vec<_> = records
        .iter()
        .map(|r| (r.attempt, r.provider.as_str(), r.status, r.success))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "openrouter", Some(503), false),
            (2, "openrouter", Some(503), false),
            (3, "openrouter", Some(503), false),
            (4, "openai", Some(200), true),
        ]
    );
    assert!(records[0]
        .error
        .as_deref()
        .unwrap()
        .contains("upstream overloaded"));
}

#[tokio::test]
async fn when_every_candidate_fails_the_error_is_retryable_and_names_them() {
    let stub = Stub::start().await;
    let mut t = task(&["openrouter:primary", "openai:backup"]);
    t.retries = 1;
    let gw = gateway(&stub, vec![("chat", t)]);
    for _ in 0..2 {
        stub.push("primary", openai_error(500, "boom"));
        stub.push("backup", openai_error(502, "bad gateway"));
    }

    let err = gw
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "provider_error");
    assert!(err.retryable());
    let text = err.to_string();
    assert_eq!(text.matches("boom").count(), 1, "{text}");
    assert_eq!(text.matches("bad gateway").count(), 1, "{text}");
    assert_eq!(stub.all_seen().len(), 4);
    // Keys never show, not even in debug output.
    let debug = format!("{gw:?}");
    assert!(
        !debug.contains("or-key") && !debug.contains("oa-key"),
        "{debug}"
    );
}

#[tokio::test]
async fn retry_after_on_429_is_waited_for() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("chat", task(&["openrouter:primary"]))]);
    stub.push(
        "primary",
        with_header(openai_error(429, "slow down"), "retry-after", "1"),
    );
    stub.push("primary", openai_text("primary", "ok", 1, 1));

    let result = gw
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.content, "ok");
    let seen = stub.seen("primary");
    // The configured backoff is at most 40 ms; only Retry-After explains a full second.
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_moves_on_at_once() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "openai:backup"]))],
    );
    stub.push(
        "primary",
        with_header(
            openai_error(429, "come back tomorrow"),
            "retry-after",
            "86400",
        ),
    );
    stub.push("backup", openai_text("backup", "ok", 1, 1));

    let started = Instant::now();
    let result = gw
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap();
    assert!(result.fallback_used);
    assert_eq!(stub.seen("primary").len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));

    // With nothing to fall back to, the wait asked for reaches the caller.
    stub.push(
        "primary",
        with_header(
            openai_error(429, "come back tomorrow"),
            "retry-after",
            "86400",
        ),
    );
    let gw = gateway(&stub, vec![("chat", task(&["openrouter:primary"]))]);
    let err = gw
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(86400)));
}

#[tokio::test]
async fn a_400_ends_the_request_without_retry_or_fallback() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "openai:backup"]))],
    );
    stub.push("primary", openai_error(400, "context length exceeded"));

    let err = gw
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), "invalid_input");
    assert!(!err.retryable());
    assert!(err.to_string().contains("context length exceeded"));
    assert_eq!(stub.seen("primary").len(), 1);
    assert!(stub.seen("backup").is_empty());
}

#[tokio::test]
async fn a_refused_key_or_a_missing_one_falls_back_without_retrying() {
    let stub = Stub::start().await;
    let mut providers = providers(&stub);
    // The public Anthropic endpoint without a key: never called.
    providers.anthropic = ProviderSettings::default();
    let llm = settings(vec![(
        "chat",
        task(&[
            "openrouter:primary",
            "anthropic:claude-opus-4-20250514",
            "openai:backup",
        ]),
    )]);
    let gw = LlmGateway::new(&llm, &providers).unwrap();
    stub.push("primary", openai_error(401, "invalid api key"));
    stub.push("backup", openai_text("backup", "ok", 1, 1));

    let calls = Calls::default();
    let result = gw
        .complete(request("chat"), &calls, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.provider, "openai");
    assert_eq!(stub.seen("primary").len(), 1);
    let records = calls.all();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].status, Some(401));
    assert!(records[1]
        .error
        .as_deref()
        .unwrap()
        .contains("ANTHROPIC_API_KEY"));
    assert_eq!(records[1].status, None);
    assert_eq!(
        stub.all_seen().len(),
        2,
        "nothing was sent for the keyless candidate"
    );
}

#[tokio::test]
async fn a_stream_falls_back_when_the_primary_breaks_before_its_first_token() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "anthropic:backup"]))],
    );
    for _ in 0..3 {
        let mut pieces = openai_stream_start("primary", &[]);
        pieces.push(Piece::Break);
        stub.push("primary", Script::Sse(pieces));
    }
    stub.push("backup", anthropic_stream("backup", &["Hi", "!"], 9, 2));

    let calls = Calls::default();
    let mut stream = gw.stream(request("chat"), &calls, CancellationToken::new());
    let mut tokens = Vec::new();
    let result = loop {
        match stream.next().await.unwrap().unwrap() {
            StreamEvent::Token(t) => tokens.push(t),
            StreamEvent::ToolCall(piece) => panic!("no tools were offered: {piece:?}"),
            StreamEvent::Done(result) => break result,
        }
    };
    assert_eq!(tokens, ["Hi", "!"]);
    assert!(result.fallback_used);
    assert_eq!(result.provider, "anthropic");
    let records = calls.all();
    assert_eq!(records.len(), 4);
    assert!(records[..3]
        .iter()
        .all(|r| !r.success && r.ttft_ms.is_none()));
}

#[tokio::test]
async fn a_stream_broken_after_its_first_token_ends_in_an_error_without_fallback() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "openai:backup"]))],
    );
    let break_now = Arc::new(Notify::new());
    let mut pieces = openai_stream_start("primary", &["Hel"]);
    pieces.push(Piece::BreakOn(break_now.clone()));
    stub.push("primary", Script::Sse(pieces));
    stub.push("backup", openai_stream("backup", &["never"], 1, 1, None));

    let calls = Calls::default();
    let mut stream = gw.stream(request("chat"), &calls, CancellationToken::new());
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        StreamEvent::Token("Hel".into())
    );
    break_now.notify_one();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, LlmError::Interrupted { .. }), "{err:?}");
    assert_eq!(err.code(), "provider_error");
    assert!(!err.retryable());
    assert!(stream.next().await.is_none());
    assert_eq!(stub.seen("primary").len(), 1);
    assert!(stub.seen("backup").is_empty());
    let records = calls.all();
    assert_eq!(records.len(), 1);
    assert!(!records[0].success && records[0].ttft_ms.is_some());
}

#[tokio::test]
async fn a_whole_answer_of_a_streaming_task_is_streamed_upstream_and_retried_when_broken() {
    let stub = Stub::start().await;
    let mut t = task(&["openrouter:primary"]);
    t.streaming = true;
    let gw = gateway(&stub, vec![("chat", t)]);
    // A body that ends after some text but before the finish is a broken answer; nobody has
    // seen its first half, so it is just a failed try.
    stub.push(
        "primary",
        Script::Sse(openai_stream_start("primary", &["Hel"])),
    );
    stub.push(
        "primary",
        openai_stream("primary", &["Hel", "lo"], 3, 2, None),
    );

    let calls = Calls::default();
    let result = gw
        .complete(request("chat"), &calls, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.content, "Hello");
    assert!(stub
        .seen("primary")
        .iter()
        .all(|s| s.body["stream"] == true));
    let records = calls.all();
    assert_eq!(records.len(), 2);
    assert!(records[0]
        .error
        .as_deref()
        .unwrap()
        .contains("ended before the answer was complete"));
    assert!(records[0].ttft_ms.is_some());
    assert!(records[1].streaming && records[1].ttft_ms.is_some());
}

#[tokio::test]
async fn cancelling_a_request_closes_the_provider_connection() {
    let stub = Stub::start().await;
    let gw = gateway(
        &stub,
        vec![("chat", task(&["openrouter:primary", "openai:backup"]))],
    );
    stub.push("primary", Script::Hang);

    let cancel = CancellationToken::new();
    let calls = Calls::default();
    let (result, ()) = tokio::join!(
        gw.complete(request("chat"), &calls, cancel.clone()),
        async {
            stub.wait_until("the request arrives", |s| s.seen("primary").len() == 1)
                .await;
            cancel.cancel();
        }
    );
    let err = result.unwrap_err();
    assert_eq!(err.code(), "cancelled");
    stub.wait_until("the stub sees the connection close", |s| s.aborted() == 1)
        .await;
    assert!(stub.seen("backup").is_empty());
    let records = calls.all();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].error.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn dropping_a_stream_closes_the_provider_connection() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("chat", task(&["anthropic:primary"]))]);
    let mut pieces = anthropic_stream_start("primary", &["Once"], 10);
    pieces.push(Piece::Hang);
    stub.push("primary", Script::Sse(pieces));

    let calls = Calls::default();
    let cancel = CancellationToken::new();
    let mut stream = gw.stream(request("chat"), &calls, cancel.clone());
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        StreamEvent::Token("Once".into())
    );
    assert_eq!(stub.aborted(), 0);
    drop(stream);
    stub.wait_until("the stub sees the connection close", |s| s.aborted() == 1)
        .await;

    // And a cancelled stream ends with `cancelled`.
    let mut pieces = anthropic_stream_start("primary", &["Once"], 10);
    pieces.push(Piece::Hang);
    stub.push("primary", Script::Sse(pieces));
    let mut stream = gw.stream(request("chat"), &calls, cancel.clone());
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::Token(_)))
    ));
    cancel.cancel();
    assert_eq!(
        stream.next().await.unwrap().unwrap_err().code(),
        "cancelled"
    );
    assert!(stream.next().await.is_none());
    stub.wait_until("the stub sees the second connection close", |s| {
        s.aborted() == 2
    })
    .await;
}

/// A client that leaves before the end still pays for what the provider made: the call is
/// recorded with the usage so far, what the provider has not said yet estimated (OpenAI-style
/// streams say theirs only in the last chunk; Anthropic says its input at the start), and
/// priced.
#[tokio::test]
async fn a_stream_cancelled_midway_is_recorded_with_its_usage_so_far() {
    let stub = Stub::start().await;
    let (openai, anthropic) = ("gpt-4o-mini", "claude-opus-4-20250514");
    let gw = gateway(
        &stub,
        vec![
            ("openai", task(&[&format!("openai:{openai}")])),
            ("anthropic", task(&[&format!("anthropic:{anthropic}")])),
        ],
    );
    let received = ["Once", " upon", " a"];
    let mut pieces = openai_stream_start(openai, &received);
    pieces.push(Piece::Hang);
    stub.push(openai, Script::Sse(pieces));
    let mut pieces = anthropic_stream_start(anthropic, &received, 50);
    pieces.push(Piece::Hang);
    stub.push(anthropic, Script::Sse(pieces));

    // Per million tokens: gpt-4o-mini $0.15 in and $0.60 out, Claude Opus 4 $15 and $75.
    for (n, task, price) in [(1, "openai", (0.15, 0.6)), (2, "anthropic", (15.0, 75.0))] {
        let calls = Calls::default();
        let cancel = CancellationToken::new();
        let mut stream = gw.stream(request(task), &calls, cancel.clone());
        for piece in received {
            assert_eq!(
                stream.next().await.unwrap().unwrap(),
                StreamEvent::Token(piece.into())
            );
        }
        cancel.cancel();
        assert_eq!(
            stream.next().await.unwrap().unwrap_err().code(),
            "cancelled"
        );
        assert!(stream.next().await.is_none());
        stub.wait_until("the stub sees the connection close", |s| s.aborted() == n)
            .await;

        let records = calls.all();
        assert_eq!(records.len(), 1, "{task}: {records:?}");
        let r = &records[0];
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            !r.success && error.starts_with("cancelled"),
            "{task}: {r:?}"
        );
        assert!(error.contains("usage estimated"), "{task}: {r:?}");
        assert!(r.output_tokens >= received.len() as u64, "{task}: {r:?}");
        assert!(r.input_tokens > 0, "{task}: {r:?}");
        assert!(r.ttft_ms.is_some(), "{task}: {r:?}");
        let cost = (r.input_tokens as f64 * price.0 + r.output_tokens as f64 * price.1) / 1e6;
        assert!(
            (r.cost_usd.unwrap_or_default() - cost).abs() < 1e-12 && cost > 0.0,
            "{task}: {r:?}"
        );
        if task == "anthropic" {
            assert_eq!(r.input_tokens, 50, "as message_start said");
        }
    }
}

fn person_format() -> serde_json::Value {
    json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object", "additionalProperties": false, "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}
    }}})
}

fn person_request() -> LlmRequest {
    LlmRequest {
        response_format: Some(person_format()),
        ..request("extract")
    }
}

#[tokio::test]
async fn a_json_schema_answer_that_does_not_match_is_asked_again_with_the_error() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("extract", task(&["openrouter:primary"]))]);
    stub.push(
        "primary",
        openai_text("primary", "{\"name\": \"Ada\"}", 10, 5),
    );
    stub.push(
        "primary",
        openai_text(
            "primary",
            "```json\n{\"name\": \"Ada\", \"age\": 36}\n```",
            30,
            9,
        ),
    );

    let calls = Calls::default();
    let result = gw
        .complete(person_request(), &calls, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(result.parsed, Some(json!({"name": "Ada", "age": 36})));
    assert_eq!(result.usage.input_tokens, 40, "both calls are counted");
    let seen = stub.seen("primary");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["response_format"], person_format());
    // OpenRouter drops `response_format` for the models that do not take it, so the schema
    // is also stated in words, at the end of the system prompt.
    let system = seen[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are terse.\n\n"), "{system}");
    assert!(system.contains("JSON Schema") && system.contains("\"required\""));
    let messages = seen[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": "{\"name\": \"Ada\"}"})
    );
    assert_eq!(messages[3]["role"], "user");
    let feedback = messages[3]["content"].as_str().unwrap();
    assert!(
        feedback.contains("\"age\" is a required property"),
        "{feedback}"
    );
    let attempts: Vec<u32> = calls.all().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2]);
}

/// An OpenAI-compatible endpoint takes `response_format` itself: the prompt stays as it was,
/// and a conversation without a system prompt gets none.
#[tokio::test]
async fn an_openai_endpoint_gets_the_schema_only_as_response_format() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("extract", task(&["openai:primary"]))]);
    stub.push(
        "primary",
        openai_text("primary", "{\"name\": \"Ada\", \"age\": 36}", 10, 5),
    );
    let mut request = person_request();
    request
        .messages
        .retain(|m| m.role != xenios_llm::Role::System);
    let result = gw
        .complete(request, &Calls::default(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.parsed, Some(json!({"name": "Ada", "age": 36})));
    let seen = stub.seen("primary");
    assert_eq!(seen[0].body["response_format"], person_format());
    let messages = seen[0].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["role"], "user");
}

#[tokio::test]
async fn anthropic_gets_the_schema_in_its_system_prompt_and_gives_up_after_three_tries() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("extract", task(&["anthropic:primary"]))]);
    for _ in 0..4 {
        stub.push("primary", anthropic_text("primary", "Ada is 36.", 10, 5));
    }

    let err = gw
        .complete(
            person_request(),
            &Calls::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.code(), "schema_validation_failed");
    assert!(
        matches!(err, LlmError::SchemaValidation { tries: 3, .. }),
        "{err:?}"
    );
    let seen = stub.seen("primary");
    assert_eq!(seen.len(), 3, "the first try and two more");
    let system = seen[0].body["system"].as_str().unwrap();
    assert!(system.starts_with("You are terse.\n\n"));
    assert!(system.contains("JSON Schema") && system.contains("\"required\""));
    assert_eq!(seen[0].body.get("response_format"), None);
}

#[tokio::test]
async fn bad_requests_are_invalid_input_and_reach_no_provider() {
    let stub = Stub::start().await;
    let gw = gateway(&stub, vec![("chat", task(&["openrouter:primary"]))]);
    let bad = [
        request("no_such_task"),
        LlmRequest {
            temperature: Some(2.5),
            ..request("chat")
        },
        LlmRequest {
            max_tokens: Some(1_000_000),
            ..request("chat")
        },
        LlmRequest {
            messages: vec![],
            ..request("chat")
        },
        LlmRequest {
            response_format: Some(json!({"type": "json_schema", "json_schema": {"name": "x"}})),
            ..request("chat")
        },
    ];
    for req in bad {
        let err = gw
            .complete(req.clone(), &Calls::default(), CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{req:?}: {err}");
        assert!(!err.retryable());
    }
    let err = gw
        .complete(request("nope"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown task `nope`"), "{err}");
    assert!(stub.all_seen().is_empty());
}

#[test]
fn a_candidate_on_an_unknown_provider_is_a_configuration_error() {
    let llm = settings(vec![("chat", task(&["nowhere:model"]))]);
    let err = LlmGateway::new(&llm, &Default::default()).unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(err.to_string().contains("nowhere"), "{err}");
    // The SPEC table works out of the box, keys or not.
    LlmGateway::new(&Default::default(), &Default::default()).unwrap();
}

#[test]
fn requests_and_streams_can_run_on_any_runtime_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let gw = LlmGateway::new(&Default::default(), &Default::default()).unwrap();
    let calls = Calls::default();
    assert_send(&gw.complete(request("chat"), &calls, CancellationToken::new()));
    assert_send(&gw.stream(request("chat"), &calls, CancellationToken::new()));
}
