//! The docling-serve client against a stub server on 127.0.0.1 that checks the multipart
//! request and answers in docling-serve's response shape.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{pdf, png, Page};
use serde_json::{json, Value};
use xenios_extract::{DoclingClient, ExtractError, ExtractOptions, OutputFormat};

/// One multipart field as the stub received it.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

/// The `X-Api-Key` header and the fields of one request.
type Request = (Option<String>, Vec<Field>);

/// How the stub answers, given the `to_formats` asked for.
type Respond = fn(&str) -> Response;

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Seen {
    fn only(&self) -> Request {
        let requests = self.requests.lock().unwrap();
        assert_eq!(requests.len(), 1, "exactly one conversion request");
        requests[0].clone()
    }
}

fn field<'a>(fields: &'a [Field], name: &str) -> Vec<&'a Field> {
    fields.iter().filter(|f| f.name == name).collect()
}

fn text_field(fields: &[Field], name: &str) -> String {
    let found = field(fields, name);
    assert_eq!(found.len(), 1, "one {name} field");
    String::from_utf8(found[0].data.clone()).unwrap()
}

/// Reads the multipart form the way docling-serve's FastAPI endpoint does, records it,
/// and answers with `respond(to_formats)`.
async fn convert(
    State((seen, respond)): State<(Seen, Respond)>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut fields = Vec::new();
    while let Some(f) = form.next_field().await.unwrap() {
        let name = f.name().unwrap_or_default().to_owned();
        let file_name = f.file_name().map(str::to_owned);
        let content_type = f.content_type().map(str::to_owned);
        let data = f.bytes().await.unwrap().to_vec();
        fields.push(Field {
            name,
            file_name,
            content_type,
            data,
        });
    }
    let key = headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap().to_owned());
    let to_formats = fields
        .iter()
        .find(|f| f.name == "to_formats")
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .unwrap_or_default();
    seen.requests.lock().unwrap().push((key, fields));
    respond(&to_formats)
}

/// The body docling-serve sends for one converted file.
fn docling_answer(to_formats: &str, status: &str, errors: Value) -> Value {
    let (md, text) = match to_formats {
        "md" => (json!("# Scanned report\n\nHello from OCR."), Value::Null),
        _ => (Value::Null, json!("Scanned report\n\nHello from OCR.")),
    };
    json!({
        "document": {
            "filename": "scan.pdf",
            "md_content": md,
            "json_content": null,
            "html_content": null,
            "text_content": text,
            "doctags_content": null
        },
        "status": status,
        "errors": errors,
        "processing_time": 2.5,
        "timings": {}
    })
}

fn success(to_formats: &str) -> Response {
    Json(docling_answer(to_formats, "success", json!([]))).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn stub(path: &str, respond: Respond) -> (String, Seen) {
    let seen = Seen::default();
    let router = Router::new()
        .route(path, post(convert))
        .with_state((seen.clone(), respond));
    (serve(router).await, seen)
}

fn client(base: &str) -> DoclingClient {
    DoclingClient::new(base, Duration::from_secs(10)).unwrap()
}

fn scan() -> Vec<u8> {
    pdf(&[Page::Image], None)
}

#[tokio::test]
async fn converts_a_scan_through_v1_convert_file() {
    let (base, seen) = stub("/v1/convert/file", success).await;
    let bytes = scan();
    let docling = client(&format!("{base}/")).with_api_key("secret-key");
    assert!(!format!("{docling:?}").contains("secret-key"));
    let out = docling
        .convert(bytes.clone(), "uploads/scan", &ExtractOptions::default())
        .await
        .unwrap();

    assert_eq!(out.content, "# Scanned report\n\nHello from OCR.");
    assert_eq!(out.format, OutputFormat::Markdown);
    assert_eq!(out.title.as_deref(), Some("Scanned report"));
    assert_eq!(out.pages, None);
    assert_eq!(out.metadata["extractor"], "docling");
    assert_eq!(out.metadata["source_format"], "pdf");
    assert_eq!(out.metadata["docling_status"], "success");
    assert_eq!(out.metadata["processing_time_s"], 2.5);

    let (key, fields) = seen.only();
    assert_eq!(key.as_deref(), Some("secret-key"));
    let files = field(&fields, "files");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_name.as_deref(), Some("scan.pdf"));
    assert_eq!(files[0].content_type.as_deref(), Some("application/pdf"));
    assert_eq!(files[0].data, bytes);
    assert_eq!(text_field(&fields, "to_formats"), "md");
    assert_eq!(text_field(&fields, "do_ocr"), "true");
    assert_eq!(text_field(&fields, "image_export_mode"), "placeholder");
}

/// An image goes as what it is: named with its extension when the upload's name lacks one,
/// and typed by its signature.
#[tokio::test]
async fn an_image_is_sent_under_its_own_type() {
    let (base, seen) = stub("/v1/convert/file", success).await;
    let photo = png();
    let out = client(&base)
        .convert(photo.clone(), "IMG_2041", &ExtractOptions::default())
        .await
        .unwrap();
    assert_eq!(out.metadata["source_format"], "png");
    assert_eq!(out.metadata["extractor"], "docling");
    let (_, fields) = seen.only();
    let files = field(&fields, "files");
    assert_eq!(files[0].file_name.as_deref(), Some("IMG_2041.png"));
    assert_eq!(files[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(files[0].data, photo);
}

#[tokio::test]
async fn text_output_asks_for_text() {
    let (base, seen) = stub("/v1/convert/file", success).await;
    let opts = ExtractOptions {
        output: OutputFormat::Text,
        ..ExtractOptions::default()
    };
    let out = client(&base)
        .convert(scan(), "scan.PDF", &opts)
        .await
        .unwrap();
    assert_eq!(out.content, "Scanned report\n\nHello from OCR.");
    assert_eq!(out.format, OutputFormat::Text);
    let (key, fields) = seen.only();
    assert_eq!(key, None);
    assert_eq!(text_field(&fields, "to_formats"), "text");
    assert_eq!(
        field(&fields, "files")[0].file_name.as_deref(),
        Some("scan.PDF")
    );
}

#[tokio::test]
async fn partial_success_keeps_docling_errors() {
    fn partial(to_formats: &str) -> Response {
        let errors = json!([{
            "component_type": "document_backend",
            "module_name": "pdf",
            "error_message": "page 3 could not be rendered"
        }]);
        Json(docling_answer(to_formats, "partial_success", errors)).into_response()
    }
    let (base, _) = stub("/v1/convert/file", partial).await;
    let out = client(&base)
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap();
    assert_eq!(out.metadata["docling_status"], "partial_success");
    assert_eq!(
        out.metadata["docling_errors"],
        json!(["document_backend/pdf: page 3 could not be rendered"])
    );
}

#[tokio::test]
async fn failed_conversion_is_a_corrupt_document() {
    fn failure(_: &str) -> Response {
        Json(json!({
            "document": {"filename": "scan.pdf", "md_content": null, "text_content": null},
            "status": "failure",
            "errors": [{"component_type": "pipeline", "module_name": "ocr", "error_message": "cannot decode image"}],
            "processing_time": 0.1,
            "timings": {}
        }))
        .into_response()
    }
    let (base, _) = stub("/v1/convert/file", failure).await;
    let err = client(&base)
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "corrupt_document");
    assert!(err.to_string().contains("cannot decode image"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn servers_before_v1_are_reached_on_v1alpha() {
    let (base, seen) = stub("/v1alpha/convert/file", success).await;
    let out = client(&base)
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap();
    assert_eq!(out.content, "# Scanned report\n\nHello from OCR.");
    assert_eq!(field(&seen.only().1, "files").len(), 1);
}

#[tokio::test]
async fn server_errors_are_retryable_unavailability() {
    fn overloaded(_: &str) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
    }
    let (base, _) = stub("/v1/convert/file", overloaded).await;
    let err = client(&base)
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");
    assert!(err.is_retryable());

    // Nothing listens on a port just released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(&format!("http://{addr}"))
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");

    // A server without the endpoint at all.
    let base = serve(Router::new()).await;
    let err = client(&base)
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");
    assert!(err.to_string().contains("no conversion endpoint"), "{err}");
}

/// A server that does not answer within the client's own limit may on the next try; only the
/// job's deadline makes it a timeout, which no try can beat.
#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_until_the_deadline() {
    let router = Router::new().route(
        "/v1/convert/file",
        post(|| async { std::future::pending::<&'static str>().await }),
    );
    let base = serve(router).await;
    let started = Instant::now();
    let err = DoclingClient::new(&base, Duration::from_millis(300))
        .unwrap()
        .convert(scan(), "scan.pdf", &ExtractOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));

    // The job's deadline shortens the client's own timeout.
    let opts = ExtractOptions {
        deadline: Some(Instant::now() + Duration::from_millis(200)),
        ..ExtractOptions::default()
    };
    let err = client(&base)
        .convert(scan(), "scan.pdf", &opts)
        .await
        .unwrap_err();
    assert_eq!(err, ExtractError::Timeout);
}

#[tokio::test]
async fn oversized_answers_are_too_large() {
    let (base, _) = stub("/v1/convert/file", success).await;
    let opts = ExtractOptions {
        max_output_chars: 10,
        ..ExtractOptions::default()
    };
    let err = client(&base)
        .convert(scan(), "scan.pdf", &opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "too_large");
}
