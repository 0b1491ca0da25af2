//! A scriptable stand-in for OpenAI-compatible and Anthropic endpoints, speaking their real
//! wire formats over real HTTP on 127.0.0.1. Shared by this crate's tests and the end-to-end
//! tests of the workspace (`tests/llm.rs` includes this file), so it needs only axum, futures,
//! serde_json and tokio.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the stub answers to one request.
pub enum Script {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    },
    /// An event-stream body, piece by piece.
    Sse(Vec<Piece>),
    /// Never answers.
    Hang,
}

pub enum Piece {
    /// Written as is.
    Raw(String),
    /// The connection breaks here (the body errors).
    Break,
    /// The connection breaks once the test says so: what was written before surely arrived.
    BreakOn(Arc<Notify>),
    /// Nothing more is ever written.
    Hang,
    /// Nothing is written for a while.
    Pause(Duration),
    /// Nothing more is written until the test says so.
    WaitFor(Arc<Notify>),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub model: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
    /// The client's end of the connection the request came over.
    pub peer: SocketAddr,
}

#[derive(Default)]
struct Shared {
    scripts: Mutex<HashMap<String, VecDeque<Script>>>,
    seen: Mutex<Vec<Seen>>,
    /// Answers that were still open when the client went away.
    aborted: AtomicUsize,
    /// Event-stream answers written to their end.
    finished: AtomicUsize,
}

pub struct Stub {
    pub url: String,
    shared: Arc<Shared>,
}

/// Counts an answer abandoned by the client: dropped with the handler or the body.
struct AbortGuard(Arc<Shared>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.0.aborted.fetch_add(1, Ordering::SeqCst);
    }
}

impl Stub {
    pub async fn start() -> Stub {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/messages", post(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub { url, shared }
    }

    /// Queues the next answer to a request for `model` (as sent upstream).
    pub fn push(&self, model: &str, script: Script) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .entry(model.to_owned())
            .or_default()
            .push_back(script);
    }

    pub fn seen(&self, model: &str) -> Vec<Seen> {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter().filter(|s| s.model == model).cloned().collect()
    }

    pub fn all_seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn finished(&self) -> usize {
        self.shared.finished.load(Ordering::SeqCst)
    }

    pub fn aborted(&self) -> usize {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    pub async fn wait_until(&self, what: &str, done: impl Fn(&Stub) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    shared.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        model: model.clone(),
        headers,
        body,
        at: Instant::now(),
        peer,
    });
    let script = shared
        .scripts
        .lock()
        .unwrap()
        .get_mut(&model)
        .and_then(VecDeque::pop_front);
    match script {
        None => (
            StatusCode::IM_A_TEAPOT,
            format!("no answer scripted for model `{model}`"),
        )
            .into_response(),
        Some(Script::Json {
            status,
            headers,
            body,
        }) => {
            let mut response =
                (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Some(Script::Hang) => {
            let _guard = AbortGuard(shared);
            std::future::pending::<Response>().await
        }
        Some(Script::Sse(pieces)) => {
            let done = shared.clone();
            let guard = pieces
                .iter()
                .any(|p| matches!(p, Piece::Hang))
                .then(|| AbortGuard(shared));
            let stream = futures::stream::iter(pieces).filter_map(|piece| async move {
                match piece {
                    Piece::Raw(text) => Some(Ok(Bytes::from(text))),
                    Piece::Break => Some(Err(std::io::Error::other("stub breaks the stream"))),
                    Piece::BreakOn(signal) => {
                        signal.notified().await;
                        Some(Err(std::io::Error::other("stub breaks the stream")))
                    }
                    Piece::Hang => std::future::pending().await,
                    Piece::Pause(pause) => {
                        tokio::time::sleep(pause).await;
                        None
                    }
                    Piece::WaitFor(go) => {
                        go.notified().await;
                        None
                    }
                }
            });
            let end = futures::stream::once(async move {
                done.finished.fetch_add(1, Ordering::SeqCst);
            })
            .filter_map(|()| async { None });
            let stream = stream.chain(end).map(move |item| {
                let _ = &guard;
                item
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

// ---- Answers in the providers' real formats ----

pub fn openai_text(model: &str, text: &str, input: u64, output: u64) -> Script {
    let message = json!({"role": "assistant", "content": text});
    openai_answer(model, message, "stop", input, output)
}

fn openai_answer(model: &str, message: Value, finish: &str, input: u64, output: u64) -> Script {
    Script::Json {
        status: 200,
        headers: vec![],
        body: json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": message,
                         "logprobs": null, "finish_reason": finish}],
            "usage": {"prompt_tokens": input, "completion_tokens": output,
                      "total_tokens": input + output}
        }),
    }
}

/// With OpenRouter's `usage.cost`.
pub fn openrouter_text(model: &str, text: &str, input: u64, output: u64, cost: f64) -> Script {
    let Script::Json { mut body, .. } = openai_text(model, text, input, output) else {
        unreachable!()
    };
    body["usage"]["cost"] = cost.into();
    Script::Json {
        status: 200,
        headers: vec![],
        body,
    }
}

fn data(v: Value) -> Piece {
    Piece::Raw(format!("data: {v}\n\n"))
}

fn openai_chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
           "model": model,
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
}

/// The role chunk, then one content chunk per piece.
pub fn openai_stream_start(model: &str, pieces: &[&str]) -> Vec<Piece> {
    let mut out = vec![data(openai_chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    out.extend(
        pieces
            .iter()
            .map(|p| data(openai_chunk(model, json!({"content": p}), None))),
    );
    out
}

/// The end of a streamed answer: finish chunk, usage chunk (with OpenRouter's `cost` if
/// given), `[DONE]`.
pub fn openai_stream_end(model: &str, input: u64, output: u64, cost: Option<f64>) -> Vec<Piece> {
    openai_stream_finish(model, "stop", input, output, cost)
}

fn openai_stream_finish(
    model: &str,
    reason: &str,
    input: u64,
    output: u64,
    cost: Option<f64>,
) -> Vec<Piece> {
    let mut usage = json!({"prompt_tokens": input, "completion_tokens": output,
                           "total_tokens": input + output});
    if let Some(cost) = cost {
        usage["cost"] = cost.into();
    }
    vec![
        data(openai_chunk(model, json!({}), Some(reason))),
        data(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model, "choices": [],
                    "usage": usage}),
        ),
        Piece::Raw("data: [DONE]\n\n".into()),
    ]
}

/// A whole streamed answer: role, content, finish, usage chunk, `[DONE]`; OpenRouter's
/// keep-alive comment first.
pub fn openai_stream(
    model: &str,
    pieces: &[&str],
    input: u64,
    output: u64,
    cost: Option<f64>,
) -> Script {
    let mut out = vec![Piece::Raw(": OPENROUTER PROCESSING\n\n".into())];
    out.extend(openai_stream_start(model, pieces));
    out.extend(openai_stream_end(model, input, output, cost));
    Script::Sse(out)
}

/// A call the stub's model makes: id, function name, and its arguments in the pieces a
/// stream sends them in (whole answers send them joined).
pub struct StubCall<'a>(pub &'a str, pub &'a str, pub &'a [&'a str]);

impl StubCall<'_> {
    fn arguments(&self) -> String {
        self.2.concat()
    }
}

/// An answer that calls tools: no content, `finish_reason: "tool_calls"`.
pub fn openai_tool_calls(model: &str, calls: &[StubCall<'_>], input: u64, output: u64) -> Script {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({"id": c.0, "type": "function",
                        "function": {"name": c.1, "arguments": c.arguments()}})
        })
        .collect();
    let message = json!({"role": "assistant", "content": null, "tool_calls": calls});
    openai_answer(model, message, "tool_calls", input, output)
}

/// The same streamed as OpenAI does: per call, a first chunk with its `index`, id, name and
/// empty arguments, then one chunk per piece of its arguments; `finish_reason: "tool_calls"`.
pub fn openai_tool_stream(model: &str, calls: &[StubCall<'_>], input: u64, output: u64) -> Script {
    let mut out = openai_stream_start(model, &[]);
    for (index, call) in calls.iter().enumerate() {
        let first = json!({"index": index, "id": call.0, "type": "function",
                           "function": {"name": call.1, "arguments": ""}});
        out.push(data(openai_chunk(
            model,
            json!({"tool_calls": [first]}),
            None,
        )));
        out.extend(call.2.iter().map(|piece| {
            let next = json!({"index": index, "function": {"arguments": piece}});
            data(openai_chunk(model, json!({"tool_calls": [next]}), None))
        }));
    }
    out.extend(openai_stream_finish(
        model,
        "tool_calls",
        input,
        output,
        None,
    ));
    Script::Sse(out)
}

pub fn openai_error(status: u16, message: &str) -> Script {
    Script::Json {
        status,
        headers: vec![],
        body: json!({"error": {"message": message, "type": "invalid_request_error",
                               "param": null, "code": null}}),
    }
}

/// The same answer, ended by `max_tokens`: OpenAI's `finish_reason: "length"`, Anthropic's
/// `stop_reason: "max_tokens"`, whole or in the stream's last events.
pub fn cut_short(script: Script) -> Script {
    let cut = |text: String| {
        text.replace(r#""finish_reason":"stop""#, r#""finish_reason":"length""#)
            .replace(
                r#""stop_reason":"end_turn""#,
                r#""stop_reason":"max_tokens""#,
            )
    };
    match script {
        Script::Json {
            status,
            headers,
            body,
        } => Script::Json {
            status,
            headers,
            body: serde_json::from_str(&cut(body.to_string())).unwrap(),
        },
        Script::Sse(pieces) => Script::Sse(
            pieces
                .into_iter()
                .map(|piece| match piece {
                    Piece::Raw(text) => Piece::Raw(cut(text)),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

pub fn with_header(script: Script, name: &'static str, value: &str) -> Script {
    match script {
        Script::Json {
            status,
            mut headers,
            body,
        } => {
            headers.push((name, value.to_owned()));
            Script::Json {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

pub fn anthropic_text(model: &str, text: &str, input: u64, output: u64) -> Script {
    Script::Json {
        status: 200,
        headers: vec![],
        body: json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output}
        }),
    }
}

/// `anthropic_text` whose usage counts the prompt cache's writes and reads too; `input` is the
/// uncached rest, as Anthropic counts it.
pub fn anthropic_text_cached(
    model: &str,
    text: &str,
    [input, written, read, output]: [u64; 4],
) -> Script {
    let Script::Json { mut body, .. } = anthropic_text(model, text, input, output) else {
        unreachable!()
    };
    body["usage"]["cache_creation_input_tokens"] = written.into();
    body["usage"]["cache_read_input_tokens"] = read.into();
    Script::Json {
        status: 200,
        headers: vec![],
        body,
    }
}

/// An OpenAI-wire JSON answer whose usage says how much of the prompt the cache read and (as
/// OpenRouter says of Anthropic's cache) wrote.
pub fn with_cached_prompt(script: Script, cached: u64, written: u64) -> Script {
    match script {
        Script::Json {
            status,
            headers,
            mut body,
        } => {
            body["usage"]["prompt_tokens_details"] =
                json!({"cached_tokens": cached, "cache_write_tokens": written});
            Script::Json {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

fn event(name: &str, v: Value) -> Piece {
    Piece::Raw(format!("event: {name}\ndata: {v}\n\n"))
}

/// `message_start`, `content_block_start`, `ping`, one `text_delta` per piece.
pub fn anthropic_stream_start(model: &str, pieces: &[&str], input: u64) -> Vec<Piece> {
    anthropic_stream_start_with(
        model,
        pieces,
        json!({"input_tokens": input, "output_tokens": 1}),
    )
}

/// `anthropic_stream_start` with `usage` in its `message_start`.
pub fn anthropic_stream_start_with(model: &str, pieces: &[&str], usage: Value) -> Vec<Piece> {
    let mut out = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    out.extend(pieces.iter().map(|p| {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": p}}),
        )
    }));
    out
}

/// `content_block_stop`, `message_delta` with the usage, `message_stop`.
pub fn anthropic_stream_end(output: u64) -> Vec<Piece> {
    vec![
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": output}}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ]
}

pub fn anthropic_stream(model: &str, pieces: &[&str], input: u64, output: u64) -> Script {
    let mut out = anthropic_stream_start(model, pieces, input);
    out.extend(anthropic_stream_end(output));
    Script::Sse(out)
}

/// An answer of `text` (if any) and `tool_use` blocks, `stop_reason: "tool_use"`.
pub fn anthropic_tool_use(model: &str, text: &str, calls: &[StubCall<'_>]) -> Script {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    content.extend(calls.iter().map(|c| {
        let input: Value = serde_json::from_str(&c.arguments()).unwrap();
        json!({"type": "tool_use", "id": c.0, "name": c.1, "input": input})
    }));
    Script::Json {
        status: 200,
        headers: vec![],
        body: json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 40, "output_tokens": 20}
        }),
    }
}

/// The same streamed: a text block of `pieces` (if any), then per call a `tool_use` block
/// (`content_block_start` with id and name, an empty and then one `input_json_delta` per
/// piece of its arguments, `content_block_stop`); `stop_reason: "tool_use"`.
pub fn anthropic_tool_stream(model: &str, pieces: &[&str], calls: &[StubCall<'_>]) -> Script {
    let mut out = anthropic_stream_start(model, pieces, 40);
    out.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    for (i, call) in calls.iter().enumerate() {
        let index = i + 1;
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": call.0, "name": call.1,
                                     "input": {}}}),
        ));
        out.extend(std::iter::once(&"").chain(call.2).map(|piece| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            )
        }));
        out.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 20}}),
    ));
    out.push(event("message_stop", json!({"type": "message_stop"})));
    Script::Sse(out)
}

pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Script {
    Script::Json {
        status,
        headers: vec![],
        body: json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
}
