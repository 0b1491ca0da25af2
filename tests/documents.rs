//! Files, extraction and transcription end to end: multipart upload → the `FILES` object
//! store → a job → the extraction or transcription consumer → the result, with real
//! documents built at test time, a local HTTP server for `url` inputs and a Deepgram stub
//! speaking Deepgram's real response shape.
mod common;

#[path = "../libs/xenios-extract/tests/common/mod.rs"]
mod docs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use docs::{
    a_para, deflated_zeros, docx, para, pdf, png, pptx, shape, xlsx, zip_with_raw_entry, Page,
    Slide,
};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);
const MAX_FILE: usize = 1_000_000;
/// The `url`-input server listens here, the one host the stacks allow-list: 127.0.0.1
/// itself stays refused.
const SERVED_HOST: &str = "127.0.0.2";

async fn stack(extra: &[(&str, &str)]) -> Stack {
    let mut pairs = vec![
        ("files.max_bytes", MAX_FILE.to_string()),
        ("fetch.allow_hosts", SERVED_HOST.to_owned()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Stack::start_with(Db::Postgres, &refs, 1).await
}

async fn upload(stack: &Stack, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    stack.upload_as(USER, name, bytes).await
}

async fn delete_as(stack: &Stack, path: &str, user: &str) -> reqwest::Response {
    stack
        .authed(stack.http.delete(stack.url(path)), user)
        .send()
        .await
        .unwrap()
}

async fn upload_ok(stack: &Stack, name: &str, bytes: Vec<u8>) -> Value {
    let response = upload(stack, name, bytes).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn extract_file(stack: &Stack, file_id: &str) -> Value {
    let id = stack
        .submit(
            "extraction",
            json!({"file_id": file_id, "output": "markdown"}),
        )
        .await;
    stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await
}

fn succeeded(job: &Value) -> &Value {
    assert_eq!(job["status"], "succeeded", "{job}");
    &job["result"]
}

fn failed_with(job: &Value, code: &str) {
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], code, "{job}");
    assert_eq!(job["error"]["retryable"], false, "{job}");
}

fn sample_docx() -> Vec<u8> {
    docx(
        &[
            para(Some("Heading1"), None, "Quarterly results"),
            para(None, None, "Revenue grew in every region."),
            para(None, Some((1, 0)), "North up twelve percent"),
        ]
        .concat(),
    )
}

fn sample_pptx() -> Vec<u8> {
    let shapes = [
        shape(Some(r#"type="title""#), &a_para("Kickoff", "")),
        shape(Some(r#"idx="1""#), &a_para("Goals for the quarter", "")),
    ]
    .concat();
    pptx(&[Slide {
        shapes: &shapes,
        notes: Some("Ask about sleep"),
        hidden: false,
    }])
}

fn sample_pdf() -> Vec<u8> {
    pdf(
        &[
            Page::Lines(vec!["Session notes page one".into()]),
            Page::Lines(vec!["Follow-up on page two".into()]),
        ],
        Some("Coaching Session"),
    )
}

#[tokio::test]
async fn uploaded_documents_are_extracted_and_cached() {
    let stack = stack(&[]).await;
    let sheet = r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row><row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2"><v>42</v></c></row>"#;
    let cases: Vec<(&str, Vec<u8>, &str, &[&str])> = vec![
        (
            "report.docx",
            sample_docx(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            &["# Quarterly results", "Revenue grew in every region.", "North up twelve percent"],
        ),
        ("notes.pdf", sample_pdf(), "application/pdf", &["Session notes page one", "Follow-up on page two"]),
        (
            "page.html",
            b"<!DOCTYPE html><html><head><title>Welcome page</title><style>p{color:red}</style><script>var secret = 1;</script></head><body><h1>Hello reader</h1><p>First paragraph.</p></body></html>".to_vec(),
            "text/html",
            &["# Hello reader", "First paragraph."],
        ),
        ("data.csv", b"name,score\nalice,10\nbob,7\n".to_vec(), "text/csv", &["alice", "bob", "score"]),
        (
            "sales.xlsx",
            xlsx(&[("Q1", sheet)], &["region", "total", "Europe"]),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            &["region", "Europe", "42"],
        ),
        (
            "kickoff.pptx",
            sample_pptx(),
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            &["## Slide 1: Kickoff", "- Goals for the quarter", "### Notes", "Ask about sleep"],
        ),
        (
            "plan.odt",
            include_bytes!("../libs/xenios-extract/tests/fixtures/plan.odt").to_vec(),
            "application/vnd.oasis.opendocument.text",
            &["# Session plan", "- Walk daily", "| Steps | 8000 |"],
        ),
        (
            "scores.ods",
            include_bytes!("../libs/xenios-extract/tests/fixtures/scores.ods").to_vec(),
            "application/vnd.oasis.opendocument.spreadsheet",
            &["## Scores", "| Ana | 12 | 15.5 |"],
        ),
        (
            "checkin.rtf",
            include_bytes!("../libs/xenios-extract/tests/fixtures/checkin.rtf").to_vec(),
            "application/rtf",
            &["# Weekly check-in", "- Walk daily", "| Steps | 8000 |"],
        ),
        (
            "checkin.doc",
            include_bytes!("../libs/xenios-extract/tests/fixtures/checkin.doc").to_vec(),
            "application/msword",
            &["# Weekly check-in", "2. Review", "| Steps | 8000 |"],
        ),
    ];
    for (name, bytes, content_type, expected) in cases {
        let size = bytes.len();
        let uploaded = upload_ok(&stack, name, bytes).await;
        assert_eq!(uploaded["content_type"], content_type, "{name}: {uploaded}");
        assert_eq!(uploaded["size"], size, "{name}");
        assert_eq!(uploaded["filename"], name);
        let sha = uploaded["sha256"].as_str().unwrap().to_owned();
        assert_eq!(sha.len(), 64);
        let file_id = uploaded["file_id"].as_str().unwrap();

        let job = extract_file(&stack, file_id).await;
        let result = succeeded(&job);
        let content = result["content"].as_str().unwrap();
        for text in expected {
            assert!(
                content.contains(text),
                "{name}: `{text}` not in {content:?}"
            );
        }
        assert_eq!(result["format"], "markdown");
        assert_eq!(result["sha256"], sha.as_str(), "{name}");
        assert_eq!(result["cached"], false, "{name}");
        if name.ends_with(".pdf") {
            assert_eq!(result["pages"], 2);
            assert_eq!(result["title"], "Coaching Session");
        }
        if name.ends_with(".html") {
            assert!(!content.contains("secret"), "{content}");
            assert!(!content.contains("color"), "{content}");
        }

        // The same file again: the cache answers.
        let again = extract_file(&stack, file_id).await;
        let cached = succeeded(&again);
        assert_eq!(cached["cached"], true, "{name}");
        assert_eq!(cached["content"], result["content"]);
        assert_eq!(cached["sha256"], sha.as_str());
    }

    // Another output is another cache entry.
    let uploaded = upload_ok(&stack, "report.docx", sample_docx()).await;
    let id = stack
        .submit(
            "extraction",
            json!({"file_id": uploaded["file_id"], "output": "text"}),
        )
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    let result = succeeded(&job);
    assert_eq!(result["format"], "text");
    assert_eq!(result["cached"], false);
    assert!(!result["content"].as_str().unwrap().contains('#'));

    // Progress was reported on the way.
    let events = stack.events(&id, None, WITHIN).await;
    assert!(
        events
            .iter()
            .any(|e| e.event.as_deref() == Some("progress")),
        "{events:?}"
    );
}

/// A result larger than the broker takes in one message (1 MiB) still reaches the job's
/// events: the event refers to the store, and the API relays the stored result.
#[tokio::test]
async fn a_result_larger_than_a_broker_message_reaches_the_events() {
    let stack = stack(&[]).await;
    // 900 kB of CSV; as a Markdown table, about 2 MB of text.
    let csv = "a,b,c,d\n".repeat(110_000);
    let file = upload_ok(&stack, "big.csv", csv.into_bytes()).await;
    let id = stack
        .submit(
            "extraction",
            json!({"file_id": file["file_id"], "output": "markdown"}),
        )
        .await;
    let events = stack.events(&id, None, WITHIN).await;
    let result = events
        .iter()
        .find(|e| e.event.as_deref() == Some("result"))
        .unwrap_or_else(|| panic!("no result event among {} events", events.len()));
    let content = result.json()["content"].as_str().unwrap().to_owned();
    assert!(content.len() > 1 << 20, "{} bytes", content.len());
    let job = stack.job(&id).await;
    assert_eq!(job["result"]["content"], content.as_str());
    assert_eq!(events.last().unwrap().json()["status"], "succeeded");
}

#[tokio::test]
async fn bad_documents_fail_with_their_code_and_the_consumer_stays_up() {
    let stack = stack(&[]).await;

    let mut corrupt = sample_pdf();
    let cut = corrupt.len() / 3;
    corrupt.truncate(cut);
    corrupt.extend_from_slice(b"garbage that is not a PDF object \x00\x01\x02");
    let corrupt = upload_ok(&stack, "broken.pdf", corrupt).await;
    assert_eq!(corrupt["content_type"], "application/pdf");
    failed_with(
        &extract_file(&stack, corrupt["file_id"].as_str().unwrap()).await,
        "corrupt_document",
    );

    // 300 MiB of zeros in a few hundred KiB, declaring all of it.
    let bomb = zip_with_raw_entry(
        &[(
            "[Content_Types].xml",
            r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
        )],
        "word/document.xml",
        &deflated_zeros(300),
        300 << 20,
    );
    assert!(bomb.len() < MAX_FILE);
    let bomb = upload_ok(&stack, "bomb.docx", bomb).await;
    failed_with(
        &extract_file(&stack, bomb["file_id"].as_str().unwrap()).await,
        "too_large",
    );

    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let unsupported = upload_ok(&stack, "blob.bin", binary).await;
    assert_eq!(unsupported["content_type"], "application/octet-stream");
    failed_with(
        &extract_file(&stack, unsupported["file_id"].as_str().unwrap()).await,
        "unsupported_format",
    );

    // The consumer is still serving.
    let good = upload_ok(&stack, "report.docx", sample_docx()).await;
    let job = extract_file(&stack, good["file_id"].as_str().unwrap()).await;
    assert!(succeeded(&job)["content"]
        .as_str()
        .unwrap()
        .contains("Quarterly results"));
}

/// Uploads together are bounded (`files.max_total_bytes`): past it an upload is refused and
/// nothing of it is kept, while the files already stored stay readable.
#[tokio::test]
async fn uploads_past_the_store_total_are_refused() {
    let stack = stack(&[("files.max_total_bytes", "1500000")]).await;
    let first = upload_ok(&stack, "first.txt", vec![b'a'; 900_000]).await;
    let response = upload(&stack, "second.txt", vec![b'b'; 900_000]).await;
    assert!(response.headers().contains_key("retry-after"));
    error_body(response, 503, "unavailable").await;
    let job = extract_file(&stack, first["file_id"].as_str().unwrap()).await;
    assert!(succeeded(&job)["content"]
        .as_str()
        .unwrap()
        .starts_with("aaa"));
    // Refused before any of it was stored: the room is still there for a small file.
    upload_ok(&stack, "third.txt", vec![b'c'; 100_000]).await;
}

/// `POST /api/v1/files` with a body that sends `first` bytes of a file part and then `rest`:
/// the answer, or a failure if none comes within `WITHIN`.
async fn upload_paced(
    stack: &Stack,
    first: usize,
    rest: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
) -> reqwest::Response {
    let boundary = "xenios-paced-upload";
    let mut start = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"slow.txt\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    start.resize(start.len() + first, b'a');
    let start = futures::stream::iter([Ok(Bytes::from(start))]);
    let body = reqwest::Body::wrap_stream(futures::StreamExt::chain(start, rest));
    let request = stack
        .post("/api/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send();
    tokio::time::timeout(WITHIN, request)
        .await
        .expect("an answer to a stalled upload")
        .unwrap()
}

/// An upload whose client stops sending (`files.upload_idle_timeout_secs`), or sends too
/// slowly to finish in `files.upload_timeout_secs`, is refused like a broken body, and what
/// it had stored is deleted: it holds no connection and no partial file for ever.
#[tokio::test]
async fn stalled_and_endless_uploads_are_refused_and_leave_nothing() {
    let stack = stack(&[
        ("files.upload_idle_timeout_secs", "1"),
        ("files.upload_timeout_secs", "4"),
    ])
    .await;
    let js = async_nats::jetstream::new(stack.nats_client.clone());
    let stored_messages = || async {
        let mut stream = js.get_stream("OBJ_FILES").await.unwrap();
        stream.info().await.unwrap().state.messages
    };

    // Past the 64 KiB sniffed before the object is created: its first chunk is stored.
    let response = upload_paced(&stack, 100_000, futures::stream::pending()).await;
    let body = error_body(response, 400, "invalid_input").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled"),
        "{body}"
    );
    // Only the deletion's marker is left of the object.
    assert_eq!(stored_messages().await, 1);

    // A byte every 200 ms is never idle for a second, and never done.
    let trickle = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok(Bytes::from_static(b"a")), ()))
    });
    let response = upload_paced(&stack, 100_000, trickle).await;
    let body = error_body(response, 400, "invalid_input").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("took longer"),
        "{body}"
    );
    // The deletion markers of both objects, no chunk.
    assert_eq!(stored_messages().await, 2);

    // A client that stalls before the file part is refused too, having stored nothing.
    let response = upload_paced(&stack, 0, futures::stream::pending()).await;
    error_body(response, 400, "invalid_input").await;

    let files = stack.get_json("/api/v1/files").await;
    assert_eq!(files["files"], json!([]), "{files}");
    // Uploads still work.
    upload_ok(&stack, "notes.txt", b"Walk daily.".to_vec()).await;
}

#[tokio::test]
async fn uploads_over_the_limit_and_unknown_files_are_refused() {
    let stack = stack(&[]).await;
    let response = upload(&stack, "big.txt", vec![b'a'; MAX_FILE + 100_000]).await;
    error_body(response, 413, "payload_too_large").await;

    let response = upload(&stack, "exact.txt", vec![b'a'; MAX_FILE]).await;
    assert_eq!(response.status(), 201);

    // A multipart body without a `file` field, and a body that is not multipart.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let response = stack
        .post("/api/v1/files")
        .multipart(form)
        .send()
        .await
        .unwrap();
    error_body(response, 422, "invalid_input").await;
    let response = stack
        .post("/api/v1/files")
        .json(&json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    error_body(response, 415, "unsupported_media_type").await;

    let openapi: Value = stack
        .http
        .get(stack.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/api/v1/files"]["post"].is_object());

    // No API key, no upload.
    let response = stack
        .http
        .post(stack.url("/api/v1/files"))
        .multipart(reqwest::multipart::Form::new().text("file", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    for kind in ["extraction", "transcription"] {
        let response = stack
            .post("/api/v1/jobs")
            .json(&json!({"kind": kind, "input": {"file_id": "0197a0b0-no-such-file"}}))
            .send()
            .await
            .unwrap();
        error_body(response, 422, "invalid_input").await;
    }

    // Another user's upload is not there for this one.
    let uploaded = upload_ok(&stack, "report.docx", sample_docx()).await;
    let response = stack
        .authed(stack.http.post(stack.url("/api/v1/jobs")), OTHER_USER)
        .json(&json!({"kind": "extraction", "input": {"file_id": uploaded["file_id"]}}))
        .send()
        .await
        .unwrap();
    error_body(response, 422, "invalid_input").await;
}

#[tokio::test]
async fn urls_to_private_addresses_are_refused_at_submission() {
    let stack = stack(&[]).await;
    for url in [
        "http://127.0.0.1:9/doc.pdf",
        "http://10.1.2.3/doc.pdf",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/doc.pdf",
        "http://[::1]/doc.pdf",
        "http://0x7f.1/doc.pdf",
        // Not http(s): refused by the same policy, with the same status.
        "ftp://files.example/doc.pdf",
        "file:///etc/passwd",
        "HTTP://127.0.0.1/doc.pdf",
    ] {
        for kind in ["extraction", "transcription"] {
            let response = stack
                .post("/api/v1/jobs")
                .json(&json!({"kind": kind, "input": {"url": url}}))
                .send()
                .await
                .unwrap();
            let body = error_body(response, 400, "invalid_input").await;
            assert_eq!(body["error"]["details"][0]["field"], "input.url", "{body}");
        }
    }
    let jobs: Value = stack
        .get("/api/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
}

/// A local file server on the allow-listed address: `/doc.html` and a redirect to a
/// private address that is not allow-listed.
async fn file_server() -> String {
    let app = Router::new()
        .route(
            "/files/doc.html",
            get(|| async {
                (
                    [("content-type", "text/html")],
                    "<html><head><title>Fetched</title></head><body><h2>Fetched over HTTP</h2><p>From the allow-listed host.</p></body></html>",
                )
            }),
        )
        .route(
            "/redirect",
            get(|| async { (axum::http::StatusCode::FOUND, [("location", "http://10.0.0.1/doc.html")]) }),
        );
    let listener = tokio::net::TcpListener::bind((SERVED_HOST, 0))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn allow_listed_urls_are_fetched_and_extracted() {
    let stack = stack(&[]).await;
    let base = file_server().await;
    let id = stack
        .submit(
            "extraction",
            json!({"url": format!("{base}/files/doc.html")}),
        )
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    let result = succeeded(&job);
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("## Fetched over HTTP"),
        "{result}"
    );
    assert_eq!(result["title"], "Fetched");
    assert_eq!(result["cached"], false);

    // A redirect from the allowed host to a private one is refused when followed.
    let id = stack
        .submit("extraction", json!({"url": format!("{base}/redirect")}))
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    failed_with(&job, "url_refused");
}

/// A download that never finishes does not hold a cancelled transcription: the job ends
/// `cancelled` at once, not when `fetch.timeout_secs` (120 s) gives up on the download.
#[tokio::test]
async fn a_transcription_cancelled_while_downloading_ends_at_once() {
    let asked = Arc::new(tokio::sync::Notify::new());
    let heard = asked.clone();
    let app = Router::new().route(
        "/session.wav",
        get(move || {
            heard.notify_one();
            async {
                let start = futures::stream::once(async {
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(b"RIFF"))
                });
                (
                    [("content-type", "audio/wav")],
                    axum::body::Body::from_stream(futures::StreamExt::chain(
                        start,
                        futures::stream::pending(),
                    )),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((SERVED_HOST, 0))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (whisper, calls) =
        scripted("/v1/audio/transcriptions", vec![(200, whisper_answer())]).await;
    let stack = stack(&[
        ("providers.openai.base_url", &format!("{whisper}/v1")),
        ("providers.openai.api_key", "sk-local"),
    ])
    .await;

    let id = stack
        .submit(
            "transcription",
            json!({"url": format!("{base}/session.wav")}),
        )
        .await;
    tokio::time::timeout(WITHIN, asked.notified())
        .await
        .unwrap();
    stack.wait_for(&id, &["running"], WITHIN).await;
    assert_eq!(stack.cancel(&id).await.status(), 202);
    let job = stack
        .wait_for(&id, &["succeeded", "failed", "cancelled"], WITHIN)
        .await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(calls.lock().unwrap().is_empty());
}

/// A host the DNS says does not exist fails the job at its first try; retrying it only
/// delayed the answer by every attempt's backoff.
#[tokio::test]
async fn a_url_whose_host_does_not_exist_fails_at_once() {
    // `.invalid` never exists (RFC 6761), but a machine whose resolver cannot answer at all
    // (no network) cannot tell that, rightly a transient failure there; nor can one whose
    // resolver makes up an address for every name.
    let lookup = tokio::net::lookup_host(("no-such-host.invalid", 80)).await;
    if !lookup.is_err_and(|e| !e.to_string().contains("Temporary failure")) {
        eprintln!("skipped: this machine's resolver does not say which names do not exist");
        return;
    }
    let stack = stack(&[]).await;
    let id = stack
        .submit(
            "extraction",
            json!({"url": "http://no-such-host.invalid/doc.pdf"}),
        )
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    failed_with(&job, "fetch_failed");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-host.invalid")),
        "{job}"
    );
}

#[derive(Default)]
struct Heard {
    query: Option<String>,
    authorization: Option<String>,
    body_len: usize,
}

fn deepgram_answer() -> Value {
    let word = |w: &str, p: &str, start: f64, end: f64, speaker: u32| {
        json!({"word": w, "start": start, "end": end, "confidence": 0.98,
               "speaker": speaker, "speaker_confidence": 0.7, "punctuated_word": p})
    };
    let words = vec![
        word("hello", "Hello", 0.08, 0.4, 0),
        word("coach", "coach.", 0.4, 0.9, 0),
        word("hi", "Hi", 1.5, 1.7, 1),
        word("there", "there.", 1.7, 2.1, 1),
    ];
    json!({
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": "5b0a8cbc-2e8e-4b4e-9d3a-0c1e8f6f1a77",
            "sha256": "3d8d1b0c8e5f4e7a9c3e2f1d0b9a8c7e6f5d4c3b2a1908f7e6d5c4b3a2918070",
            "created": "2024-05-01T10:00:00.000Z",
            "duration": 2.5,
            "channels": 1,
            "models": ["c0d1a568-ce81-4fea-97e7-bd45cb1fdf3c"],
            "model_info": {"c0d1a568-ce81-4fea-97e7-bd45cb1fdf3c":
                {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-2"}}
        },
        "results": {
            "channels": [{
                "alternatives": [{
                    "transcript": "Hello coach. Hi there.",
                    "confidence": 0.99,
                    "words": words
                }],
                "detected_language": "en",
                "language_confidence": 0.98
            }],
            "utterances": [
                {"start": 0.08, "end": 0.9, "confidence": 0.97, "channel": 0,
                 "transcript": "Hello coach.", "words": words[..2],
                 "speaker": 0, "id": "0f4c2f2e-3b8a-4d49-8d0b-1a2b3c4d5e6f"},
                {"start": 1.5, "end": 2.1, "confidence": 0.95, "channel": 0,
                 "transcript": "Hi there.", "words": words[2..],
                 "speaker": 1, "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"}
            ]
        }
    })
}

/// A 16-bit mono PCM WAV of `seconds` of silence.
fn wav(seconds: f64) -> Vec<u8> {
    let rate = 8000u32;
    let data_len = (seconds * f64::from(rate)) as u32 * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.resize(b.len() + data_len as usize, 0);
    b
}

#[tokio::test]
async fn transcription_goes_through_deepgram_and_comes_back_normalised() {
    let heard = Arc::new(Mutex::new(Heard::default()));
    let app = Router::new()
        .route(
            "/v1/listen",
            post(
                |State(heard): State<Arc<Mutex<Heard>>>,
                 RawQuery(query): RawQuery,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let mut h = heard.lock().unwrap();
                    h.query = query;
                    h.authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    h.body_len = body.len();
                    axum::Json(deepgram_answer())
                },
            ),
        )
        .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deepgram = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stack = stack(&[
        ("providers.deepgram.base_url", &deepgram),
        ("providers.deepgram.api_key", "dg-test-key"),
    ])
    .await;
    let audio = wav(2.5);
    let audio_len = audio.len();
    let uploaded = upload_ok(&stack, "session.wav", audio).await;
    assert_eq!(uploaded["content_type"], "audio/wav");
    let id = stack
        .submit(
            "transcription",
            json!({"file_id": uploaded["file_id"], "diarize": true}),
        )
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    let result = succeeded(&job);
    assert_eq!(
        result,
        &json!({
            "text": "Hello coach. Hi there.",
            "segments": [
                {"start": 0.08, "end": 0.9, "text": "Hello coach.", "speaker": 0},
                {"start": 1.5, "end": 2.1, "text": "Hi there.", "speaker": 1}
            ],
            "language": "en",
            "duration_s": 2.5,
            "provider": "deepgram",
            "model": "nova-2"
        })
    );
    {
        let heard = heard.lock().unwrap();
        assert_eq!(heard.authorization.as_deref(), Some("Token dg-test-key"));
        assert_eq!(heard.body_len, audio_len);
        let query = heard.query.clone().unwrap_or_default();
        assert!(query.contains("diarize=true"), "{query}");
        assert!(query.contains("utterances=true"), "{query}");
    }

    // Not audio: a permanent failure naming the format.
    let text = upload_ok(&stack, "notes.txt", b"just some text".to_vec()).await;
    let id = stack
        .submit("transcription", json!({"file_id": text["file_id"]}))
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    failed_with(&job, "unsupported_format");
}

/// One answer of a [`scripted`] stub.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl From<(u16, Value)> for Answer {
    fn from((status, body): (u16, Value)) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

/// When each request reached a [`scripted`] stub.
type Calls = Arc<Mutex<Vec<std::time::Instant>>>;

/// A stub answering every POST to `path` with `answers` in turn (the last one repeated),
/// noting when each request came.
async fn scripted(path: &'static str, answers: Vec<impl Into<Answer>>) -> (String, Calls) {
    let answers: Vec<Answer> = answers.into_iter().map(Into::into).collect();
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let app = Router::new().route(
        path,
        post(move |_body: Bytes| {
            let calls = seen.clone();
            let answers = answers.clone();
            async move {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    calls.push(std::time::Instant::now());
                    calls.len()
                };
                let answer = answers[(n - 1).min(answers.len() - 1)].clone();
                let mut headers = HeaderMap::new();
                for (name, value) in answer.headers {
                    headers.insert(name, value.parse().unwrap());
                }
                (
                    axum::http::StatusCode::from_u16(answer.status).unwrap(),
                    headers,
                    axum::Json(answer.body),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

/// The result of a job that succeeded with the text the docling stub recognises.
fn recognised(job: &Value) -> &Value {
    let result = succeeded(job);
    let content = result["content"].as_str().unwrap_or_default();
    assert!(content.contains("Text recognised by OCR."), "{result}");
    result
}

/// docling-serve's answer to `POST /v1/convert/file`.
fn docling_answer() -> Value {
    json!({
        "document": {
            "filename": "scan.pdf",
            "md_content": "## Scanned heading\n\nText recognised by OCR.",
            "json_content": null, "html_content": null, "text_content": null, "doctags_content": null
        },
        "status": "success",
        "errors": [],
        "processing_time": 1.25,
        "timings": {}
    })
}

#[tokio::test]
async fn scanned_pdfs_need_ocr_and_go_to_docling_when_configured() {
    let scan = pdf(&[Page::Image, Page::Image], None);

    let stack_without = stack(&[]).await;
    let uploaded = upload_ok(&stack_without, "scan.pdf", scan.clone()).await;
    failed_with(
        &extract_file(&stack_without, uploaded["file_id"].as_str().unwrap()).await,
        "ocr_required",
    );
    // A photographed page is an image: uploaded as one, and needs OCR too.
    let photo = upload_ok(&stack_without, "page.png", png()).await;
    assert_eq!(photo["content_type"], "image/png");
    failed_with(
        &extract_file(&stack_without, photo["file_id"].as_str().unwrap()).await,
        "ocr_required",
    );
    drop(stack_without);

    let (docling, calls) = scripted("/v1/convert/file", vec![(200, docling_answer())]).await;
    let stack = stack(&[("providers.docling_url", &docling)]).await;
    let uploaded = upload_ok(&stack, "scan.pdf", scan).await;
    let job = extract_file(&stack, uploaded["file_id"].as_str().unwrap()).await;
    let result = recognised(&job);
    assert_eq!(result["cached"], false);
    assert_eq!(calls.lock().unwrap().len(), 1);

    // Cached: docling is not asked again.
    let job = extract_file(&stack, uploaded["file_id"].as_str().unwrap()).await;
    assert_eq!(succeeded(&job)["cached"], true);
    assert_eq!(calls.lock().unwrap().len(), 1);

    let photo = upload_ok(&stack, "page.png", png()).await;
    let job = extract_file(&stack, photo["file_id"].as_str().unwrap()).await;
    assert_eq!(recognised(&job)["metadata"]["source_format"], "png");
    assert_eq!(calls.lock().unwrap().len(), 2);
}

/// docling-serve's 504 (its sync wait, queue included, ran out, or a proxy's did) is a busy
/// server, not a document that cannot be converted: the job is tried again and succeeds.
#[tokio::test]
async fn a_docling_gateway_timeout_is_tried_again() {
    let too_long = json!({"detail": "Conversion is taking too long. The maximum wait time is \
        configure as DOCLING_SERVE_MAX_SYNC_WAIT=120."});
    let (docling, calls) = scripted(
        "/v1/convert/file",
        vec![(504, too_long), (200, docling_answer())],
    )
    .await;
    let stack = stack(&[("providers.docling_url", &docling)]).await;
    let uploaded = upload_ok(&stack, "scan.pdf", pdf(&[Page::Image], None)).await;
    let job = extract_file(&stack, uploaded["file_id"].as_str().unwrap()).await;
    recognised(&job);
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(calls.lock().unwrap().len(), 2);
}

/// An OpenAI-compatible endpoint's `verbose_json` transcript of [`wav`]`(2.5)`.
fn whisper_answer() -> Value {
    json!({
        "task": "transcribe",
        "language": "english",
        "duration": 2.5,
        "text": " Hello coach. Hi there.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 1.2, "text": " Hello coach.",
             "tokens": [50364, 2425, 6560, 13, 50424], "temperature": 0.0,
             "avg_logprob": -0.21, "compression_ratio": 1.05, "no_speech_prob": 0.01},
            {"id": 1, "seek": 0, "start": 1.2, "end": 2.5, "text": " Hi there.",
             "tokens": [50424, 2421, 456, 13, 50489], "temperature": 0.0,
             "avg_logprob": -0.25, "compression_ratio": 1.05, "no_speech_prob": 0.02}
        ]
    })
}

/// A WAV uploaded and transcribed through an OpenAI-compatible endpoint that gives `answers`
/// in turn: the job once it ended, and the calls the endpoint heard.
async fn transcribed_through_whisper(answers: Vec<Answer>) -> (Value, Calls) {
    let (whisper, calls) = scripted("/v1/audio/transcriptions", answers).await;
    let stack = stack(&[
        ("providers.openai.base_url", &format!("{whisper}/v1")),
        ("providers.openai.api_key", "sk-local"),
    ])
    .await;
    let uploaded = upload_ok(&stack, "session.wav", wav(2.5)).await;
    let id = stack
        .submit("transcription", json!({"file_id": uploaded["file_id"]}))
        .await;
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    (job, calls)
}

#[tokio::test]
async fn transcription_through_an_openai_compatible_endpoint_retries_its_5xx() {
    let overloaded = json!({"error": {"message": "model overloaded", "type": "server_error"}});
    let (job, calls) = transcribed_through_whisper(vec![
        (503, overloaded).into(),
        (200, whisper_answer()).into(),
    ])
    .await;
    assert_eq!(
        succeeded(&job),
        &json!({
            "text": "Hello coach. Hi there.",
            "segments": [
                {"start": 0.0, "end": 1.2, "text": "Hello coach."},
                {"start": 1.2, "end": 2.5, "text": "Hi there."}
            ],
            "language": "en",
            "duration_s": 2.5,
            "provider": "openai",
            "model": "whisper-1"
        })
    );
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(calls.lock().unwrap().len(), 2);
}

/// A provider's `Retry-After` reaches the job: its next try waits for it, not for the
/// runtime's backoff (50 ms here), which would land inside the provider's window.
#[tokio::test]
async fn a_transcription_providers_retry_after_holds_the_next_try_back() {
    let busy = Answer {
        status: 429,
        headers: vec![("retry-after", "2".into())],
        body: json!({"error": {"message": "rate limited", "type": "rate_limit_error"}}),
    };
    let (job, calls) =
        transcribed_through_whisper(vec![busy, (200, whisper_answer()).into()]).await;
    assert_eq!(succeeded(&job)["text"], "Hello coach. Hi there.");
    assert_eq!(job["attempts"], 2, "{job}");
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    let waited = calls[1] - calls[0];
    assert!(
        waited >= Duration::from_secs(2),
        "tried again after {waited:?}"
    );
}

/// A user's data is erased on request, everywhere it is held (jobs, events, dead letters,
/// files, cached extractions, the LLM audit), and no one else's: queued jobs are cancelled
/// first, a running one is told to stop and taken by the next call.
#[tokio::test]
async fn a_users_data_is_erased_on_request_and_no_one_elses() {
    use async_nats::jetstream;
    let stack = stack(&[]).await;
    let notes = b"# Session notes\n\nSlept badly; walk after lunch.\n".to_vec();
    let file = upload_ok(&stack, "notes.md", notes.clone()).await;
    let file_id = file["file_id"].as_str().unwrap().to_owned();
    let extracted = extract_file(&stack, &file_id).await;
    assert_eq!(succeeded(&extracted)["cached"], false);
    let echo = stack.submit("echo", json!({"message": "hi"})).await;
    stack.wait_for(&echo, &["succeeded"], WITHIN).await;
    let hopeless = stack
        .submit("echo", json!({"message": "never", "fail": "transient"}))
        .await;
    stack.wait_for(&hopeless, &["failed"], WITHIN).await;
    let slow = stack
        .submit("echo", json!({"message": "slow", "delay_ms": 60000}))
        .await;
    stack.wait_for(&slow, &["running"], WITHIN).await;

    let response = stack
        .upload_as(OTHER_USER, "theirs.md", notes.clone())
        .await;
    assert_eq!(response.status(), 201);
    let theirs: Value = response.json().await.unwrap();
    let theirs = theirs["file_id"].as_str().unwrap().to_owned();
    let their_job = stack
        .submit_as(OTHER_USER, "echo", json!({"message": "mine"}))
        .await;
    for (user, job) in [(USER, &echo), (OTHER_USER, &their_job)] {
        let log = xenios_store::InferenceLog {
            id: uuid::Uuid::now_v7(),
            created_at: chrono::Utc::now(),
            user_id: Some(user.into()),
            job_id: Some(job.parse().unwrap()),
            task: "chat".into(),
            model: "m".into(),
            provider: "p".into(),
            attempt: 1,
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 100,
            ttft_ms: None,
            cost_usd: Some(0.01),
            success: true,
            error: None,
        };
        stack.store.insert_inference_log(&log).await.unwrap();
    }

    let (status, body) = stack.erase_user(OTHER_USER, USER).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let (status, first) = stack.erase_user(USER, USER).await;
    assert_eq!(first["dead_letters_deleted"], 1, "{first}");
    assert_eq!(first["files_deleted"], 1, "{first}");
    assert_eq!(first["cached_extractions_deleted"], 1, "{first}");
    assert_eq!(first["inference_logs_deleted"], 1, "{first}");
    assert!(first["job_events_purged"].as_u64().unwrap() >= 3, "{first}");
    // The running job is told to stop; if it is still there at the end of the call (running,
    // or stopped just after the deletes), it is left (202) for the next call, which takes it,
    // and then nothing is left.
    let mut deleted = first["jobs_deleted"].as_u64().unwrap();
    if first["complete"] == false {
        assert_eq!(status, 202, "{first}");
        assert!(
            first["jobs_still_running"].as_u64().unwrap() <= 1,
            "{first}"
        );
        stack.wait_for(&slow, &["cancelled"], WITHIN).await;
        let (status, second) = stack.erase_user(USER, USER).await;
        assert_eq!(
            (status, &second["complete"]),
            (200, &json!(true)),
            "{second}"
        );
        deleted += second["jobs_deleted"].as_u64().unwrap();
    } else {
        assert_eq!(status, 200, "{first}");
    }
    assert_eq!(deleted, 4, "extraction, echo, dead-lettered, cancelled");
    assert_eq!(stack.store.user_jobs(USER, 10).await.unwrap(), vec![]);
    for id in [&echo, &hopeless, &slow] {
        let response = stack
            .get(&format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
    let js = jetstream::new(stack.nats_client.clone());
    let events = js.get_stream("JOB_EVENTS").await.unwrap();
    for id in [&echo, &hopeless] {
        let last = events
            .direct_get_last_for_subject(format!("events.{id}"))
            .await;
        assert!(last.is_err(), "events of {id} purged");
    }
    let dlq = js.get_stream("JOBS_DLQ").await.unwrap();
    assert!(dlq
        .direct_get_next_for_subject("dlq.jobs.>", None)
        .await
        .is_err());
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "extraction", "input": {"file_id": file_id, "output": "markdown"}}))
        .send()
        .await
        .unwrap();
    error_body(response, 422, "invalid_input").await;
    // The extraction cache forgot the document: the same bytes are read again.
    let again = upload_ok(&stack, "again.md", notes).await;
    let again = extract_file(&stack, again["file_id"].as_str().unwrap()).await;
    assert_eq!(succeeded(&again)["cached"], false);

    // The other user's data is untouched.
    let job = stack
        .authed(
            stack
                .http
                .get(stack.url(&format!("/api/v1/jobs/{their_job}"))),
            OTHER_USER,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(job.status(), 200);
    let bucket = js.get_object_store("FILES").await.unwrap();
    assert!(bucket.info(&theirs).await.is_ok());
    let their_logs = stack
        .store
        .inference_logs_for_job(their_job.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(their_logs.len(), 1);
}

/// A job of the user recorded as extracting `sha256` (the worker left out), now running.
async fn running_extraction(stack: &Stack, sha256: &str) -> uuid::Uuid {
    let id = xenios_contract::new_job_id();
    let new = xenios_store::NewJob {
        id,
        kind: xenios_contract::JobKind::Extraction,
        user_id: Some(USER.into()),
        input: json!({"file_id": sha256, "output": "markdown"}),
        correlation_id: "erased".into(),
        idempotency_key: None,
        webhook_url: None,
    };
    stack.store.create_job(new).await.unwrap();
    stack.store.start_attempt(id).await.unwrap();
    id
}

/// What a consumer does when an extraction ends: its cache entry, its outcome, then its
/// events.
async fn finish_extraction(stack: &Stack, id: uuid::Uuid, sha256: &str) {
    use xenios_contract::envelope::JobEvent;
    let result = json!({"content": "# Notes", "sha256": sha256});
    let key = format!("{sha256}:markdown");
    stack
        .store
        .put_extraction(&key, sha256, &result)
        .await
        .unwrap();
    stack
        .store
        .finish_job(id, xenios_store::Outcome::Succeeded(result))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(stack.nats_client.clone());
    let event = JobEvent::status(xenios_contract::JobStatus::Succeeded, 1, chrono::Utc::now());
    js.publish(format!("events.{id}"), event.to_bytes())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A job that finishes while an erasure runs, after its events and cached extractions were
/// erased, is not deleted with the jobs that had finished before: the call answers
/// `complete: false`, and the next one takes the job with what it wrote meanwhile.
#[tokio::test]
async fn a_job_that_finishes_during_an_erasure_is_left_for_the_next() {
    use async_nats::jetstream;
    let stack = stack(&[]).await;
    let early = running_extraction(&stack, "early").await;
    finish_extraction(&stack, early, "early").await;
    let late = running_extraction(&stack, "late").await;

    // The erasure waits at the cached extractions, after it purged the events, until the
    // late job has finished.
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let mut held = db.begin().await.unwrap();
    let schema = xenios_store::PG_SCHEMA;
    sqlx::query(&format!(
        "SELECT 1 FROM {schema}.extraction_cache WHERE sha256 = 'early' FOR UPDATE"
    ))
    .fetch_one(&mut *held)
    .await
    .unwrap();
    let erasing = {
        let api = Api::new(stack.base.clone());
        tokio::spawn(async move { api.erase_user(USER, USER).await })
    };
    eventually(WITHIN, || {
        let db = db.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'DELETE FROM extraction_cache%'",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            waiting > 0
        }
    })
    .await;
    finish_extraction(&stack, late, "late").await;
    held.rollback().await.unwrap();

    let (status, first) = erasing.await.unwrap();
    assert_eq!(
        (status, &first["complete"]),
        (202, &json!(false)),
        "{first}"
    );
    assert_eq!(first["jobs_deleted"], 1, "{first}");
    assert_eq!(first["jobs_still_running"], 0, "{first}");
    let left = stack.store.user_jobs(USER, 10).await.unwrap();
    assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), vec![late]);

    let (status, second) = stack.erase_user(USER, USER).await;
    assert_eq!(
        (status, &second["complete"]),
        (200, &json!(true)),
        "{second}"
    );
    assert_eq!(second["jobs_deleted"], 1, "{second}");
    assert_eq!(second["cached_extractions_deleted"], 1, "{second}");
    let response = stack
        .get(&format!("/api/v1/jobs/{late}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let js = jetstream::new(stack.nats_client.clone());
    let events = js.get_stream("JOB_EVENTS").await.unwrap();
    for id in [early, late] {
        let last = events
            .direct_get_last_for_subject(format!("events.{id}"))
            .await;
        assert!(last.is_err(), "events of {id} purged");
    }
    assert_eq!(
        stack
            .store
            .cached_extraction("late:markdown")
            .await
            .unwrap(),
        None
    );
}

/// A file whose chunks are gone while its metadata is not (the TTL takes the older chunks
/// first) does not hold its job until the hard time limit: the read gives up once nothing
/// arrives for a while (a transient failure, tried again), and once the file is gone
/// altogether the job fails with `file_not_found`.
#[tokio::test]
async fn a_file_whose_chunks_are_gone_does_not_hold_its_job() {
    let stack = stack(&[]).await;
    let uploaded = upload_ok(&stack, "notes.md", b"# Notes\n\nWalk daily.\n".to_vec()).await;
    let file_id = uploaded["file_id"].as_str().unwrap();
    let js = async_nats::jetstream::new(stack.nats_client.clone());
    js.get_stream("OBJ_FILES")
        .await
        .unwrap()
        .purge()
        .filter("$O.FILES.C.>")
        .await
        .unwrap();
    let id = stack
        .submit(
            "extraction",
            json!({"file_id": file_id, "output": "markdown"}),
        )
        .await;
    eventually(WITHIN, || async {
        let job = stack.job(&id).await;
        job["error"]["code"] == "unavailable"
            && job["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no part of the file"))
    })
    .await;
    let deleted = delete_as(&stack, &format!("/api/v1/files/{file_id}"), USER).await;
    assert_eq!(deleted.status(), 204);
    let job = stack.wait_for(&id, &["succeeded", "failed"], WITHIN).await;
    failed_with(&job, "file_not_found");
}

/// An uploaded file is described (`GET /api/v1/files/{id}`) and deleted before its TTL
/// (`DELETE`) by its owner; to anyone else it does not exist; once deleted, no job reads it.
#[tokio::test]
async fn a_file_is_described_and_deleted_by_its_owner_only() {
    let stack = stack(&[]).await;
    let uploaded = upload_ok(&stack, "notes.md", b"# Notes\n\nWalk daily.\n".to_vec()).await;
    let id = uploaded["file_id"].as_str().unwrap();
    let path = format!("/api/v1/files/{id}");
    let as_other = |method: reqwest::Method| {
        stack.authed(stack.http.request(method, stack.url(&path)), OTHER_USER)
    };

    let described = stack.get_json(&path).await;
    assert_eq!(described["file_id"], id);
    assert_eq!(described["sha256"], uploaded["sha256"], "{described}");
    assert_eq!(described["size"], uploaded["size"]);
    assert_eq!(described["content_type"], "text/markdown");
    assert_eq!(described["filename"], "notes.md");
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(described[field].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        (at("expires_at") - at("uploaded_at")).num_hours(),
        24,
        "the files TTL"
    );
    let age = chrono::Utc::now() - at("uploaded_at").with_timezone(&chrono::Utc);
    assert!(age.num_seconds().abs() < 60, "{described}");

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = as_other(method.clone()).send().await.unwrap();
        error_body(response, 404, "not_found").await;
    }
    let deleted = delete_as(&stack, &path, USER).await;
    assert_eq!(deleted.status(), 204);
    let response = stack.get(&path).send().await.unwrap();
    error_body(response, 404, "not_found").await;
    let response = delete_as(&stack, &path, USER).await;
    error_body(response, 404, "not_found").await;
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "extraction", "input": {"file_id": id, "output": "markdown"}}))
        .send()
        .await
        .unwrap();
    error_body(response, 422, "invalid_input").await;
}

/// `GET /api/v1/files` lists the caller's files, newest first, a page of `limit` at a time
/// (`next_cursor`); another user's and deleted ones are not there.
#[tokio::test]
async fn the_callers_files_are_listed_newest_first() {
    let stack = stack(&[]).await;
    let older = upload_ok(&stack, "older.md", b"# Older\n".to_vec()).await;
    let newer = upload_ok(&stack, "newer.md", b"# Newer\n\nMore.\n".to_vec()).await;
    let theirs = stack
        .upload_as(OTHER_USER, "theirs.md", b"# Theirs\n".to_vec())
        .await;
    assert_eq!(theirs.status(), 201);
    let ids = |list: &Value| -> Vec<String> {
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["file_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let listed = stack.get_json("/api/v1/files").await;
    assert_eq!(
        ids(&listed),
        [&newer["file_id"], &older["file_id"]].map(|v| v.as_str().unwrap().to_owned()),
        "{listed}"
    );
    let first = &listed["files"][0];
    assert_eq!(first["filename"], "newer.md");
    assert_eq!(first["sha256"], newer["sha256"]);
    assert_eq!(first["size"], newer["size"]);
    assert_eq!(first["content_type"], "text/markdown");
    assert!(first["expires_at"].is_string(), "{first}");

    assert_eq!(listed["next_cursor"], Value::Null);
    // Page by page, each file once.
    let one = stack.get_json("/api/v1/files?limit=1").await;
    assert_eq!(ids(&one), [newer["file_id"].as_str().unwrap()]);
    assert_eq!(one["next_cursor"], newer["file_id"], "{one}");
    let cursor = one["next_cursor"].as_str().unwrap();
    let two = stack
        .get_json(&format!("/api/v1/files?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&two), [older["file_id"].as_str().unwrap()], "{two}");
    assert_eq!(two["next_cursor"], Value::Null, "the last page");
    for bad in ["limit=0", "limit=1001", "limit=many", "cursor=yesterday"] {
        let response = stack
            .get(&format!("/api/v1/files?{bad}"))
            .send()
            .await
            .unwrap();
        error_body(response, 422, "invalid_input").await;
    }

    let as_other = stack
        .authed(stack.http.get(stack.url("/api/v1/files")), OTHER_USER)
        .send()
        .await
        .unwrap();
    assert_eq!(as_other.status(), 200);
    let as_other: Value = as_other.json().await.unwrap();
    assert_eq!(ids(&as_other).len(), 1, "{as_other}");
    assert_eq!(as_other["files"][0]["filename"], "theirs.md");

    let path = format!("/api/v1/files/{}", newer["file_id"].as_str().unwrap());
    let deleted = delete_as(&stack, &path, USER).await;
    assert_eq!(deleted.status(), 204);
    let listed = stack.get_json("/api/v1/files").await;
    assert_eq!(ids(&listed), [older["file_id"].as_str().unwrap()]);
}
