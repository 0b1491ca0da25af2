//! Each provider's wire format, whole and streamed, against a stub speaking it.
mod support;

use futures::StreamExt;
use serde_json::json;
use support::*;
use tokio_util::sync::CancellationToken;
use xenios_config::{ProviderSettings, ProvidersSettings};
use xenios_llm::{
    FinishReason, LlmError, LlmGateway, LlmRequest, LlmResult, LlmStream, Message, Sampling,
    StreamEvent, TaskSettings, Tool, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

/// Every token of an answer without tool calls, then the result.
async fn collect(stream: LlmStream<'_>) -> (Vec<String>, Result<LlmResult, LlmError>) {
    let (tokens, pieces, result) = collect_with_calls(stream).await;
    assert_eq!(pieces, [], "no tool calls in this answer");
    (tokens, result)
}

/// Every token and piece of a tool call, then the result.
async fn collect_with_calls(
    mut stream: LlmStream<'_>,
) -> (Vec<String>, Vec<ToolCallDelta>, Result<LlmResult, LlmError>) {
    let (mut tokens, mut pieces) = (Vec::new(), Vec::new());
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamEvent::Token(t)) => tokens.push(t),
            Ok(StreamEvent::ToolCall(piece)) => pieces.push(piece),
            Ok(StreamEvent::Done(result)) => {
                assert!(stream.next().await.is_none(), "nothing after Done");
                return (tokens, pieces, Ok(result));
            }
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (tokens, pieces, Err(e));
            }
        }
    }
    panic!("the stream ended without a result");
}

fn header(seen: &Seen, name: &str) -> Option<String> {
    seen.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn openrouter_complete_sends_its_headers_and_uses_its_reported_cost() {
    let stub = Stub::start().await;
    let mut llm = settings(vec![(
        "summary",
        task(&["anthropic/claude-opus-4-20250514"]),
    )]);
    llm.openrouter_referer = Some("https://app.example".into());
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "anthropic/claude-opus-4-20250514";
    stub.push(model, openrouter_text(model, "Hello.", 12, 3, 0.0042));

    let calls = Calls::default();
    let result = gateway
        .complete(request("summary"), &calls, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(result.content, "Hello.");
    assert_eq!(result.model, model);
    assert_eq!(result.provider, "openrouter");
    assert!(!result.fallback_used);
    assert_eq!(
        result.usage,
        Usage {
            input_tokens: 12,
            output_tokens: 3,
            ..Usage::default()
        }
    );
    assert_eq!(result.cost_usd, Some(0.0042));
    assert_eq!(result.parsed, None);

    let seen = &stub.seen(model)[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        header(seen, "authorization").as_deref(),
        Some("Bearer or-key")
    );
    assert_eq!(
        header(seen, "http-referer").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(header(seen, "x-title").as_deref(), Some("Xenios"));
    assert_eq!(
        seen.body,
        json!({
            "model": model,
            "messages": [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": "Say hello."}],
            "temperature": 0.2,
            "max_tokens": 100,
            "usage": {"include": true},
        })
    );

    let records = calls.all();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.task.as_str(), r.provider.as_str(), r.model.as_str()),
        ("summary", "openrouter", model)
    );
    assert_eq!(
        (r.attempt, r.status, r.success, r.streaming),
        (1, Some(200), true, false)
    );
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.cost_usd),
        (12, 3, Some(0.0042))
    );
    assert_eq!(r.ttft_ms, None);
    assert_eq!(r.error, None);
}

#[tokio::test]
async fn openrouter_stream_yields_each_token_then_the_result() {
    let stub = Stub::start().await;
    let llm = settings(vec![(
        "chat",
        task(&["openrouter:anthropic/claude-opus-4-20250514"]),
    )]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "anthropic/claude-opus-4-20250514";
    stub.push(
        model,
        openai_stream(model, &["Hel", "lo", " there", "."], 20, 4, Some(0.001)),
    );

    let calls = Calls::default();
    let (tokens, result) =
        collect(gateway.stream(request("chat"), &calls, CancellationToken::new())).await;
    let result = result.unwrap();

    assert_eq!(tokens, ["Hel", "lo", " there", "."]);
    assert_eq!(result.content, "Hello there.");
    assert_eq!(
        result.usage,
        Usage {
            input_tokens: 20,
            output_tokens: 4,
            ..Usage::default()
        }
    );
    assert_eq!(result.cost_usd, Some(0.001));
    let body = &stub.seen(model)[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    let r = &calls.all()[0];
    assert!(r.success && r.streaming);
    assert!(r.ttft_ms.is_some() && r.ttft_ms <= Some(r.latency_ms));
    assert_eq!((r.input_tokens, r.output_tokens), (20, 4));
}

#[tokio::test]
async fn openai_compatible_complete_and_stream_drop_the_openai_prefix_and_price_by_table() {
    let stub = Stub::start().await;
    let llm = settings(vec![("intent", task(&["openai:openai/gpt-4o-mini"]))]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    stub.push(
        "gpt-4o-mini",
        openai_text("gpt-4o-mini", "greeting", 1000, 10),
    );
    stub.push(
        "gpt-4o-mini",
        openai_stream("gpt-4o-mini", &["greet", "ing"], 1000, 10, None),
    );

    let calls = Calls::default();
    let whole = gateway
        .complete(request("intent"), &calls, CancellationToken::new())
        .await
        .unwrap();
    let (tokens, streamed) =
        collect(gateway.stream(request("intent"), &calls, CancellationToken::new())).await;
    let streamed = streamed.unwrap();

    // gpt-4o-mini lists at $0.15 in / $0.60 out per million tokens.
    let cost = (1000.0 * 0.15 + 10.0 * 0.6) / 1e6;
    for result in [&whole, &streamed] {
        assert_eq!(result.content, "greeting");
        assert_eq!(result.model, "openai/gpt-4o-mini");
        assert_eq!(result.provider, "openai");
        assert!((result.cost_usd.unwrap() - cost).abs() < 1e-12);
    }
    assert_eq!(tokens, ["greet", "ing"]);
    let seen = stub.seen("gpt-4o-mini");
    assert_eq!(seen.len(), 2);
    assert_eq!(
        header(&seen[0], "authorization").as_deref(),
        Some("Bearer oa-key")
    );
    assert_eq!(header(&seen[0], "x-title"), None);
    assert_eq!(seen[0].body.get("usage"), None);
    assert_eq!(seen[1].body["stream"], true);
    assert_eq!(calls.all().len(), 2);
}

#[tokio::test]
async fn a_local_openai_compatible_server_needs_no_key() {
    let stub = Stub::start().await;
    let llm = settings(vec![(
        "chat",
        task(&["vllm:meta-llama/Llama-3.1-8B-Instruct"]),
    )]);
    let providers = ProvidersSettings {
        extra: [(
            "vllm".to_owned(),
            ProviderSettings {
                api_key: None,
                base_url: Some(format!("{}/v1", stub.url)),
            },
        )]
        .into(),
        ..ProvidersSettings::default()
    };
    let gateway = LlmGateway::new(&llm, &providers).unwrap();
    let model = "meta-llama/Llama-3.1-8B-Instruct";
    stub.push(model, openai_text(model, "hi", 5, 1));

    let result = gateway
        .complete(request("chat"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (result.content.as_str(), result.provider.as_str()),
        ("hi", "vllm")
    );
    assert_eq!(result.cost_usd, None, "no price known");
    assert_eq!(header(&stub.seen(model)[0], "authorization"), None);
}

#[tokio::test]
async fn anthropic_complete_splits_out_the_system_prompt_and_merges_turns() {
    let stub = Stub::start().await;
    let llm = settings(vec![(
        "summary",
        task(&["anthropic:anthropic/claude-sonnet-4-20250514"]),
    )]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "claude-sonnet-4-20250514";
    stub.push(model, anthropic_text(model, "A summary.", 2000, 100));

    let mut req = request("summary");
    req.messages.push(Message::user("Be brief."));
    req.messages.push(Message::system("Use British spelling."));
    req.temperature = Some(1.5);
    req.max_tokens = Some(321);
    let calls = Calls::default();
    let result = gateway
        .complete(req, &calls, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(result.content, "A summary.");
    assert_eq!(result.model, "anthropic/claude-sonnet-4-20250514");
    assert_eq!(result.provider, "anthropic");
    assert_eq!(
        result.usage,
        Usage {
            input_tokens: 2000,
            output_tokens: 100,
            ..Usage::default()
        }
    );
    // Sonnet 4 lists at $3 in / $15 out per million tokens.
    assert!((result.cost_usd.unwrap() - (2000.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12);

    let seen = &stub.seen(model)[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(header(seen, "x-api-key").as_deref(), Some("an-key"));
    assert_eq!(
        header(seen, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(header(seen, "authorization"), None);
    assert_eq!(
        seen.body,
        json!({
            "model": model,
            "max_tokens": 321,
            "system": "You are terse.\n\nUse British spelling.",
            "messages": [{"role": "user", "content": "Say hello.\n\nBe brief."}],
            "temperature": 1.0,
        })
    );
    assert_eq!(calls.all()[0].cost_usd, result.cost_usd);
}

#[tokio::test]
async fn anthropic_stream_reads_its_event_types() {
    let stub = Stub::start().await;
    let llm = settings(vec![("chat", task(&["anthropic:claude-opus-4-20250514"]))]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "claude-opus-4-20250514";
    stub.push(
        model,
        anthropic_stream(model, &["Once", " upon", " a time"], 50, 7),
    );

    let calls = Calls::default();
    let (tokens, result) =
        collect(gateway.stream(request("chat"), &calls, CancellationToken::new())).await;
    let result = result.unwrap();

    assert_eq!(tokens, ["Once", " upon", " a time"]);
    assert_eq!(result.content, "Once upon a time");
    assert_eq!(
        result.usage,
        Usage {
            input_tokens: 50,
            output_tokens: 7,
            ..Usage::default()
        }
    );
    assert_eq!(stub.seen(model)[0].body["stream"], true);
    let r = &calls.all()[0];
    assert!(r.ttft_ms.is_some());
    assert!((r.cost_usd.unwrap() - (50.0 * 15.0 + 7.0 * 75.0) / 1e6).abs() < 1e-12);
}

type Answer = fn() -> Script;

/// Each wire's way of saying that `max_tokens` cut the answer short, whole and streamed,
/// comes out as `length`; an answer that ended by itself as `stop`.
#[tokio::test]
async fn an_answer_cut_short_by_max_tokens_says_so() {
    let stub = Stub::start().await;
    let llm = settings(vec![
        ("oa", task(&["openai:gpt-cut"])),
        ("an", task(&["anthropic:claude-cut"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let calls = Calls::default();
    // Task, model, its answer, and whether it is streamed.
    let scripts: [(&str, &str, Answer, bool); 4] = [
        (
            "oa",
            "gpt-cut",
            || openai_text("gpt-cut", "Once", 5, 1),
            false,
        ),
        (
            "oa",
            "gpt-cut",
            || openai_stream("gpt-cut", &["Once"], 5, 1, None),
            true,
        ),
        (
            "an",
            "claude-cut",
            || anthropic_text("claude-cut", "Once", 5, 1),
            false,
        ),
        (
            "an",
            "claude-cut",
            || anthropic_stream("claude-cut", &["Once"], 5, 1),
            true,
        ),
    ];
    for (task, model, script, streamed) in scripts {
        for cut in [false, true] {
            let script = match cut {
                true => cut_short(script()),
                false => script(),
            };
            stub.push(model, script);
            let result = if streamed {
                collect(gateway.stream(request(task), &calls, CancellationToken::new()))
                    .await
                    .1
            } else {
                gateway
                    .complete(request(task), &calls, CancellationToken::new())
                    .await
            };
            let result = result.unwrap();
            assert_eq!(result.content, "Once");
            let expected = if cut {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            assert_eq!(
                result.finish_reason, expected,
                "{task} streamed: {streamed}"
            );
        }
    }
}

/// Stop sequences go out in each wire's own field: OpenAI's `stop`, Anthropic's
/// `stop_sequences`; none means neither field.
#[tokio::test]
async fn stop_sequences_reach_each_provider_in_its_own_field() {
    let stub = Stub::start().await;
    let llm = settings(vec![
        ("oa", task(&["openai:gpt-stop"])),
        ("an", task(&["anthropic:claude-stop"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let calls = Calls::default();
    let stop = vec!["\n\n".to_owned(), "END".to_owned()];
    for (task, model, field) in [
        ("oa", "gpt-stop", "stop"),
        ("an", "claude-stop", "stop_sequences"),
    ] {
        stub.push(model, plain_answer(task, model));
        let req = LlmRequest {
            stop: stop.clone(),
            ..request(task)
        };
        gateway
            .complete(req, &calls, CancellationToken::new())
            .await
            .unwrap();
        let seen = &stub.seen(model)[0].body;
        assert_eq!(seen[field], json!(["\n\n", "END"]), "{seen}");
        let other = if field == "stop" {
            "stop_sequences"
        } else {
            "stop"
        };
        assert!(seen.get(other).is_none(), "{seen}");
        // Without stop sequences, neither field.
        stub.push(model, plain_answer(task, model));
        gateway
            .complete(request(task), &calls, CancellationToken::new())
            .await
            .unwrap();
        assert!(stub.seen(model)[1].body.get(field).is_none());
    }
    let too_many = LlmRequest {
        stop: vec!["a".into(); 5],
        ..request("oa")
    };
    let err = gateway
        .complete(too_many, &calls, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input", "{err}");
}

/// `top_p`, `seed` and the penalties reach an OpenAI-compatible provider as given. Anthropic is
/// sent `top_p` in place of the temperature (its newer models refuse both) and none of the
/// rest, which it does not have; a value out of range is the caller's error.
#[tokio::test]
async fn sampling_choices_reach_each_provider_as_it_takes_them() {
    let stub = Stub::start().await;
    let llm = settings(vec![
        ("oa", task(&["openai:gpt-sample"])),
        ("an", task(&["anthropic:claude-sample"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let calls = Calls::default();
    let sampling = Sampling {
        top_p: Some(0.5),
        seed: Some(42),
        presence_penalty: Some(-0.5),
        frequency_penalty: Some(1.25),
    };
    for (task, model) in [("oa", "gpt-sample"), ("an", "claude-sample")] {
        stub.push(model, plain_answer(task, model));
        let req = LlmRequest {
            sampling,
            ..request(task)
        };
        gateway
            .complete(req, &calls, CancellationToken::new())
            .await
            .unwrap();
        stub.push(model, plain_answer(task, model));
        gateway
            .complete(request(task), &calls, CancellationToken::new())
            .await
            .unwrap();
    }
    let asked = |model: &str, field: &str| stub.seen(model)[0].body.get(field).cloned();
    let plain = |model: &str, field: &str| stub.seen(model)[1].body.get(field).cloned();
    for (field, value) in [
        ("top_p", json!(0.5)),
        ("seed", json!(42)),
        ("presence_penalty", json!(-0.5)),
        ("frequency_penalty", json!(1.25)),
    ] {
        assert_eq!(asked("gpt-sample", field), Some(value), "{field}");
        assert_eq!(plain("gpt-sample", field), None, "{field} only when given");
        assert_eq!(
            plain("claude-sample", field),
            None,
            "{field} only when given"
        );
    }
    assert!(asked("gpt-sample", "temperature").is_some());
    assert_eq!(asked("claude-sample", "top_p"), Some(json!(0.5)));
    for absent in [
        "temperature",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ] {
        assert_eq!(asked("claude-sample", absent), None, "{absent}");
    }
    assert!(plain("claude-sample", "temperature").is_some());

    for (bad, field) in [
        (
            Sampling {
                top_p: Some(1.5),
                ..Sampling::default()
            },
            "top_p",
        ),
        (
            Sampling {
                frequency_penalty: Some(-2.5),
                ..Sampling::default()
            },
            "frequency_penalty",
        ),
    ] {
        let req = LlmRequest {
            sampling: bad,
            ..request("oa")
        };
        let err = gateway
            .complete(req, &calls, CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    assert_eq!(
        stub.seen("gpt-sample").len(),
        2,
        "an invalid request is not sent"
    );
}

fn plain_answer(task: &str, model: &str) -> Script {
    match task {
        "oa" => openai_text(model, "a", 1, 1),
        _ => anthropic_text(model, "a", 1, 1),
    }
}

#[tokio::test]
async fn an_anthropic_error_event_before_text_is_retried() {
    let stub = Stub::start().await;
    let llm = settings(vec![("chat", task(&["anthropic:claude-opus-4-20250514"]))]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "claude-opus-4-20250514";
    let mut overloaded = anthropic_stream_start(model, &[], 50);
    overloaded.push(Piece::Raw(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into(),
    ));
    stub.push(model, Script::Sse(overloaded));
    stub.push(
        model,
        anthropic_error(529, "overloaded_error", "Overloaded"),
    );
    stub.push(model, anthropic_stream(model, &["ok"], 50, 1));

    let calls = Calls::default();
    let (tokens, result) =
        collect(gateway.stream(request("chat"), &calls, CancellationToken::new())).await;
    assert_eq!(result.unwrap().content, "ok");
    assert_eq!(tokens, ["ok"]);
    let records = calls.all();
    assert_eq!(records.len(), 3);
    assert!(records[0]
        .error
        .as_deref()
        .unwrap()
        .contains("overloaded_error: Overloaded"));
    assert_eq!(records[0].input_tokens, 50, "usage so far is recorded");
    assert_eq!(records[1].status, Some(529));
    assert!(records[2].success);
}

/// The script with its body ending `after` its last event (servers often send the chunked
/// body's end in a later write than the last event).
fn ending_late(script: Script, after: std::time::Duration) -> Script {
    let Script::Sse(mut pieces) = script else {
        unreachable!("an event stream")
    };
    pieces.push(Piece::Pause(after));
    Script::Sse(pieces)
}

#[tokio::test]
async fn a_finished_stream_leaves_its_connection_to_the_next_call() {
    let stub = Stub::start().await;
    let llm = settings(vec![
        ("chat", task(&["openai:gpt-4o-mini"])),
        ("summary", task(&["anthropic:claude-sonnet-4-20250514"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let late = std::time::Duration::from_millis(300);
    for (task, model, script) in [
        (
            "chat",
            "gpt-4o-mini",
            (|m| openai_stream(m, &["a", "b"], 5, 2, None)) as fn(&str) -> Script,
        ),
        ("summary", "claude-sonnet-4-20250514", |m| {
            anthropic_stream(m, &["a", "b"], 5, 2)
        }),
    ] {
        stub.push(model, ending_late(script(model), late));
        stub.push(model, script(model));
        let calls = Calls::default();
        let before = stub.finished();
        let (_, first) =
            collect(gateway.stream(request(task), &calls, CancellationToken::new())).await;
        assert_eq!(first.unwrap().content, "ab");
        // The answer is whole at its last event; its body ends later.
        assert_eq!(
            stub.finished(),
            before,
            "{task}: the result waited for the body's end"
        );
        stub.wait_until(
            "the first body ended (a client that hangs up at the last event never lets it)",
            |s| s.finished() > before,
        )
        .await;
        // The pool cannot be watched: give the client a moment to read the body's end.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (_, second) =
            collect(gateway.stream(request(task), &calls, CancellationToken::new())).await;
        assert_eq!(second.unwrap().content, "ab");

        let seen = stub.seen(model);
        assert_eq!(
            seen[0].peer, seen[1].peer,
            "{task}: the second call opened a new connection"
        );
    }
}

/// A task with `prompt_cache` marks, on Anthropic, the system prompt and the last turn (the
/// conversation so far) as cache prefixes; the answer's cache writes and reads are counted in
/// the usage, the call record and the cost, at the cache's prices.
#[tokio::test]
async fn anthropic_prompt_cache_marks_the_prompt_and_prices_cached_input() {
    let stub = Stub::start().await;
    let cached = |candidate| TaskSettings {
        prompt_cache: true,
        ..task(&[candidate])
    };
    let llm = settings(vec![
        ("chat", cached("anthropic:claude-opus-4-20250514")),
        ("plain", task(&["anthropic:claude-opus-4-20250514"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "claude-opus-4-20250514";
    stub.push(
        model,
        anthropic_text_cached(model, "Welcome back.", [40, 2000, 3000, 25]),
    );

    let mut req = request("chat");
    req.messages.push(Message::assistant("Hello."));
    req.messages.push(Message::user("How was my week?"));
    let calls = Calls::default();
    let result = gateway
        .complete(req.clone(), &calls, CancellationToken::new())
        .await
        .unwrap();

    let mark = json!({"type": "ephemeral"});
    assert_eq!(
        stub.seen(model)[0].body["system"],
        json!([{"type": "text", "text": "You are terse.", "cache_control": mark}])
    );
    assert_eq!(
        stub.seen(model)[0].body["messages"],
        json!([
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [
                {"type": "text", "text": "How was my week?", "cache_control": mark}]},
        ])
    );
    let usage = Usage {
        input_tokens: 5040,
        output_tokens: 25,
        cache_read_tokens: 3000,
        cache_write_tokens: 2000,
    };
    assert_eq!(result.usage, usage);
    // Opus 4: $15 per million input tokens, a cache write 1.25× that, a read a tenth; $75 out.
    let expected = (40.0 * 15.0 + 2000.0 * 18.75 + 3000.0 * 1.5 + 25.0 * 75.0) / 1e6;
    assert!((result.cost_usd.unwrap() - expected).abs() < 1e-12);
    let record = &calls.all()[0];
    assert_eq!(
        (record.cache_read_tokens, record.cache_write_tokens),
        (3000, 2000)
    );
    assert_eq!(record.cost_usd, result.cost_usd);

    // Streamed: the counts come in `message_start`.
    let usage_start = json!({"input_tokens": 40, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 5000, "output_tokens": 1});
    let mut script = anthropic_stream_start_with(model, &["Fine", "."], usage_start);
    script.extend(anthropic_stream_end(9));
    stub.push(model, Script::Sse(script));
    let (tokens, result) = collect(gateway.stream(req, &calls, CancellationToken::new())).await;
    assert_eq!(tokens, ["Fine", "."]);
    let usage = result.unwrap().usage;
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens
        ),
        (5040, 5000, 0)
    );

    // A task without it sends plain strings.
    stub.push(model, anthropic_text(model, "Hi.", 10, 2));
    gateway
        .complete(request("plain"), &calls, CancellationToken::new())
        .await
        .unwrap();
    let seen = &stub.seen(model)[2].body;
    assert_eq!(seen["system"], "You are terse.");
    assert_eq!(seen["messages"][0]["content"], "Say hello.");

    // An empty block is never marked: Anthropic refuses a mark on one.
    stub.push(model, anthropic_text(model, "Hi.", 10, 2));
    let mut req = request("chat");
    req.messages.push(Message::assistant(""));
    gateway
        .complete(req, &calls, CancellationToken::new())
        .await
        .unwrap();
    let seen = &stub.seen(model)[3].body;
    assert_eq!(
        seen["messages"][1],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(seen["system"][0]["cache_control"]["type"], "ephemeral");
}

/// Through OpenRouter the marks go on the last system message and the last message, but only
/// for Claude models: others cache by themselves, and a plain OpenAI-compatible server is
/// never sent them. OpenAI's `prompt_tokens_details` says what the cache read and wrote.
#[tokio::test]
async fn openrouter_marks_only_claude_prompts_and_reads_cached_counts() {
    let stub = Stub::start().await;
    let cached = |candidate| TaskSettings {
        prompt_cache: true,
        ..task(&[candidate])
    };
    let claude = "anthropic/claude-sonnet-4-20250514";
    let llm = settings(vec![
        ("claude", cached(claude)),
        ("mini", cached("openai/gpt-4o-mini")),
        ("direct", cached("openai:gpt-4o-mini")),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let calls = Calls::default();
    stub.push(
        claude,
        with_cached_prompt(openrouter_text(claude, "Hi.", 3000, 4, 0.0012), 2048, 900),
    );
    let result = gateway
        .complete(request("claude"), &calls, CancellationToken::new())
        .await
        .unwrap();
    let mark = json!({"type": "ephemeral"});
    assert_eq!(
        stub.seen(claude)[0].body["messages"],
        json!([
            {"role": "system", "content": [
                {"type": "text", "text": "You are terse.", "cache_control": mark}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Say hello.", "cache_control": mark}]},
        ])
    );
    assert_eq!(
        (
            result.usage.cache_read_tokens,
            result.usage.cache_write_tokens
        ),
        (2048, 900)
    );
    assert_eq!(result.cost_usd, Some(0.0012), "the reported cost wins");

    for (task, model) in [("mini", "openai/gpt-4o-mini"), ("direct", "gpt-4o-mini")] {
        stub.push(
            model,
            with_cached_prompt(openai_text(model, "Hi.", 2000, 10), 1024, 0),
        );
        let result = gateway
            .complete(request(task), &calls, CancellationToken::new())
            .await
            .unwrap();
        let seen = &stub.seen(model)[0].body;
        assert_eq!(seen["messages"][0]["content"], "You are terse.", "{task}");
        assert_eq!(seen["messages"][1]["content"], "Say hello.", "{task}");
        assert_eq!(result.usage.cache_read_tokens, 1024);
        // gpt-4o-mini: $0.15 per million input tokens, cached reads half that; $0.60 out.
        let expected = (976.0 * 0.15 + 1024.0 * 0.075 + 10.0 * 0.6) / 1e6;
        assert!(
            (result.cost_usd.unwrap() - expected).abs() < 1e-12,
            "{task}"
        );
    }
}

fn weather_tool() -> Tool {
    Tool::function(
        "get_weather",
        "The current weather in a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}},
               "required": ["city"]}),
    )
}

/// A second turn: the model asked for Paris's weather, the caller ran the tool.
fn after_a_tool_call(task: &str) -> LlmRequest {
    let mut req = request(task);
    req.messages.extend([
        Message::tool_calls(
            "",
            vec![ToolCall::new(
                "call_paris",
                "get_weather",
                r#"{"city":"Paris"}"#,
            )],
        ),
        Message::tool_result("call_paris", "18°C, clear"),
        Message::user("And in Rome and Oslo?"),
    ]);
    req.tools = vec![weather_tool()];
    req
}

fn two_cities() -> [StubCall<'static>; 2] {
    [
        StubCall(
            "call_rome",
            "get_weather",
            &["{\"ci", "ty\": \"Ro", "me\"}"],
        ),
        StubCall("call_oslo", "get_weather", &["{\"city\"", ": \"Oslo\"}"]),
    ]
}

fn rome_and_oslo(rome: &str, oslo: &str) -> [ToolCall; 2] {
    [
        ToolCall::new("call_rome", "get_weather", rome),
        ToolCall::new("call_oslo", "get_weather", oslo),
    ]
}

/// An OpenAI-compatible provider is sent the tools, the choice and the conversation's calls
/// and results as given; its calls come back whole, and streamed ones are put together from
/// their pieces. A tool-call answer is not held to the JSON response format.
#[tokio::test]
async fn openai_compatible_tool_calls_whole_and_streamed() {
    let stub = Stub::start().await;
    let llm = settings(vec![("oa", task(&["openai:gpt-tools"]))]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "gpt-tools";
    stub.push(model, openai_tool_calls(model, &two_cities(), 30, 12));
    stub.push(model, openai_tool_stream(model, &two_cities(), 30, 12));

    let mut req = after_a_tool_call("oa");
    req.tool_choice = Some(ToolChoice::Required);
    req.parallel_tool_calls = Some(true);
    // The format is the final answer's: a call is not asked again for not matching it.
    req.response_format = Some(json!({"type": "json_schema", "json_schema": {
        "name": "forecast", "schema": {"type": "object", "required": ["summary"]}}}));
    let calls = Calls::default();
    let whole = gateway
        .complete(req.clone(), &calls, CancellationToken::new())
        .await
        .unwrap();
    let (tokens, pieces, streamed) =
        collect_with_calls(gateway.stream(req, &calls, CancellationToken::new())).await;
    let streamed = streamed.unwrap();

    assert!(tokens.is_empty(), "{tokens:?}");
    // Each call's first piece names it; the rest are its arguments, as the provider sent them.
    assert_eq!(pieces.len(), 7, "{pieces:?}");
    assert_eq!(
        pieces[0],
        ToolCallDelta::start(0, "call_rome", "get_weather")
    );
    assert_eq!(
        pieces[4],
        ToolCallDelta::start(1, "call_oslo", "get_weather")
    );
    let oslo: String = pieces[5..]
        .iter()
        .map(|p| p.function.arguments.as_str())
        .collect();
    assert_eq!(oslo, r#"{"city": "Oslo"}"#);
    for result in [&whole, &streamed] {
        assert_eq!(result.content, "");
        assert_eq!(result.finish_reason, FinishReason::ToolCalls);
        assert_eq!(result.parsed, None);
        // As the model wrote them: OpenAI's arguments are text.
        assert_eq!(
            result.tool_calls,
            rome_and_oslo(r#"{"city": "Rome"}"#, r#"{"city": "Oslo"}"#)
        );
    }
    assert_eq!(calls.all().len(), 2, "no re-ask");
    let seen = stub.seen(model);
    assert_eq!(seen[1].body["stream"], true);
    let body = &seen[0].body;
    assert_eq!(body["tools"], json!([weather_tool()]));
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_paris", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "content": "18°C, clear", "tool_call_id": "call_paris"},
            {"role": "user", "content": "And in Rome and Oslo?"},
        ])
    );
}

/// Anthropic is sent its own shapes: tools with `input_schema`, a named choice as `tool`, the
/// conversation's calls as `tool_use` blocks and its results as a user turn of `tool_result`
/// blocks. Its `tool_use` answers, whole or streamed as `input_json_delta` pieces, come back
/// as OpenAI's calls with the input as JSON text.
#[tokio::test]
async fn anthropic_tool_use_whole_and_streamed() {
    let stub = Stub::start().await;
    let llm = settings(vec![("an", task(&["anthropic:claude-tools"]))]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let model = "claude-tools";
    stub.push(
        model,
        anthropic_tool_use(model, "Checking both.", &two_cities()),
    );
    stub.push(
        model,
        anthropic_tool_stream(model, &["Checking", " both."], &two_cities()),
    );

    let mut req = after_a_tool_call("an");
    req.tool_choice = Some(ToolChoice::Function("get_weather".into()));
    req.parallel_tool_calls = Some(false);
    let calls = Calls::default();
    let whole = gateway
        .complete(req.clone(), &calls, CancellationToken::new())
        .await
        .unwrap();
    let (tokens, pieces, streamed) =
        collect_with_calls(gateway.stream(req, &calls, CancellationToken::new())).await;
    let streamed = streamed.unwrap();

    assert_eq!(tokens, ["Checking", " both."]);
    // Anthropic's `input_json_delta` pieces, numbered among the calls.
    let starts: Vec<(u32, Option<&str>)> = pieces
        .iter()
        .filter(|p| p.id.is_some())
        .map(|p| (p.index, p.id.as_deref()))
        .collect();
    assert_eq!(starts, [(0, Some("call_rome")), (1, Some("call_oslo"))]);
    let rome: String = pieces
        .iter()
        .filter(|p| p.index == 0)
        .map(|p| p.function.arguments.as_str())
        .collect();
    assert_eq!(rome, r#"{"city": "Rome"}"#);
    for result in [&whole, &streamed] {
        assert_eq!(result.content, "Checking both.");
        assert_eq!(result.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            result.tool_calls,
            rome_and_oslo(r#"{"city":"Rome"}"#, r#"{"city":"Oslo"}"#)
        );
    }
    let body = &stub.seen(model)[0].body;
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "The current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_paris", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_paris", "content": "18°C, clear"},
                {"type": "text", "text": "And in Rome and Oslo?"}]},
        ])
    );
    assert_eq!(body["system"], "You are terse.");
}

/// Arguments Anthropic cannot take as a `tool_use` input are the caller's error, found before
/// any call; an OpenAI-compatible provider is sent them as they are.
#[tokio::test]
async fn arguments_anthropic_cannot_read_are_refused_before_any_call() {
    let stub = Stub::start().await;
    let llm = settings(vec![
        ("an", task(&["openai:gpt-first", "anthropic:claude-then"])),
        ("oa", task(&["openai:gpt-first"])),
    ]);
    let gateway = LlmGateway::new(&llm, &providers(&stub)).unwrap();
    let broken = |task: &str| {
        let mut req = request(task);
        req.messages.push(Message::tool_calls(
            "",
            vec![ToolCall::new("call_1", "get_weather", r#"{"city": "Par"#)],
        ));
        req.messages.push(Message::tool_result("call_1", "?"));
        req.tools = vec![weather_tool()];
        req
    };
    let err = gateway
        .complete(broken("an"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input", "{err}");
    let message = err.to_string();
    assert!(
        message.contains("messages[2].tool_calls[0].function.arguments")
            && message.contains("anthropic"),
        "{message}"
    );
    assert!(stub.all_seen().is_empty(), "no call was made");

    stub.push("gpt-first", openai_text("gpt-first", "Sorry.", 5, 1));
    let result = gateway
        .complete(broken("oa"), &Calls::default(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(result.content, "Sorry.");
    assert!(result.tool_calls.is_empty());
    assert_eq!(
        stub.seen("gpt-first")[0].body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city": "Par"#
    );
}
