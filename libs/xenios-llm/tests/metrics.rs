//! The SPEC §6 LLM metrics, read back from a Prometheus recorder (its own test binary: the
//! recorder is process-global).
mod support;

use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use support::*;
use tokio_util::sync::CancellationToken;
use xenios_llm::{LlmGateway, StreamEvent};

#[tokio::test]
async fn calls_are_counted_by_task_model_and_outcome() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let stub = Stub::start().await;
    let mut t = task(&["openrouter:primary", "anthropic:claude-sonnet-4-20250514"]);
    t.retries = 0;
    let gw = LlmGateway::new(&settings(vec![("chat", t)]), &providers(&stub)).unwrap();
    stub.push("primary", openai_error(503, "down"));
    let model = "claude-sonnet-4-20250514";
    stub.push(model, anthropic_stream(model, &["a", "b"], 1000, 200));

    let calls = Calls::default();
    let mut stream = gw.stream(request("chat"), &calls, CancellationToken::new());
    while let Some(event) = stream.next().await {
        if let StreamEvent::Done(result) = event.unwrap() {
            assert!(result.fallback_used);
        }
    }

    let text = handle.render();
    for line in [
        r#"xenios_llm_requests_total{task="chat",model="primary",outcome="server_error"} 1"#,
        r#"xenios_llm_requests_total{task="chat",model="claude-sonnet-4-20250514",outcome="success"} 1"#,
        r#"xenios_llm_tokens_total{task="chat",model="claude-sonnet-4-20250514",direction="input"} 1000"#,
        r#"xenios_llm_tokens_total{task="chat",model="claude-sonnet-4-20250514",direction="output"} 200"#,
        // $3 and $15 per million tokens.
        r#"xenios_llm_cost_usd_total{task="chat",model="claude-sonnet-4-20250514"} 0.006"#,
        r#"xenios_llm_time_to_first_token_seconds_count{task="chat",model="claude-sonnet-4-20250514"} 1"#,
        r#"xenios_llm_fallbacks_total{task="chat"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}
