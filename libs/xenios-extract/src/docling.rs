//! Client of docling-serve, for documents the local extractors cannot read (scanned PDFs,
//! images): `POST /v1/convert/file`, one multipart `files` part, answered with
//! `{"document":{"md_content"|"text_content",…},"status","errors","processing_time"}`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{sniff, ExtractError, ExtractOptions, Extracted, OutputFormat};

/// The synchronous conversion endpoint of docling-serve 1.x, and the one servers before
/// 1.0 had, tried when the first is missing.
const CONVERT_PATHS: [&str; 2] = ["/v1/convert/file", "/v1alpha/convert/file"];

/// Room for JSON escaping and the response's other fields on top of the content.
const RESPONSE_SLACK: usize = 1 << 20;

#[derive(Clone)]
pub struct DoclingClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

/// Shows the server, never the API key.
impl std::fmt::Debug for DoclingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoclingClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl DoclingClient {
    /// A client of the docling-serve at `base_url` (e.g. `http://docling:5001`); `timeout`
    /// bounds each conversion request, OCR included.
    pub fn new(base_url: impl Into<String>, timeout: Duration) -> Result<Self, ExtractError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ExtractError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(DoclingClient {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
        })
    }

    /// Sends `key` as `X-Api-Key`, for a docling-serve started with `DOCLING_SERVE_API_KEY`.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Converts one document with OCR. `filename` tells docling-serve the format, so the
    /// extension of the sniffed format is added when it lacks one. `opts.output` chooses
    /// Markdown or text, `opts.max_output_chars` bounds the answer and `opts.deadline`
    /// shortens the request timeout; the page and decompression limits are docling's.
    pub async fn convert(
        &self,
        bytes: impl Into<Bytes>,
        filename: &str,
        opts: &ExtractOptions,
    ) -> Result<Extracted, ExtractError> {
        let bytes: Bytes = bytes.into();
        let format = sniff(&bytes);
        let filename = file_name(filename, format);
        let mime = format.map_or("application/octet-stream", |f| f.mime_type());

        let mut last_missing = None;
        for path in CONVERT_PATHS {
            let part = Part::stream_with_length(Body::from(bytes.clone()), bytes.len() as u64)
                .file_name(filename.clone())
                .mime_str(mime)
                .map_err(|e| ExtractError::Unavailable(format!("bad multipart part: {e}")))?;
            let form = Form::new()
                .part("files", part)
                .text("to_formats", to_format(opts.output))
                .text("do_ocr", "true")
                .text("image_export_mode", "placeholder")
                .text("abort_on_error", "false");
            let mut request = self
                .http
                .post(format!("{}{path}", self.base_url))
                .multipart(form);
            if let Some(deadline) = opts.deadline {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .ok_or(ExtractError::Timeout)?;
                request = request.timeout(left);
            }
            if let Some(key) = &self.api_key {
                request = request.header("X-Api-Key", key);
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(e, opts.deadline))?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                last_missing = Some(path);
                continue;
            }
            let limit = opts
                .max_output_chars
                .saturating_mul(4)
                .saturating_add(RESPONSE_SLACK);
            let body = read_limited(response, limit, opts.deadline).await?;
            if !status.is_success() {
                return Err(status_error(status, &body));
            }
            let answer: ConvertResponse = serde_json::from_slice(&body).map_err(|e| {
                ExtractError::Unavailable(format!("docling-serve answered unreadable JSON: {e}"))
            })?;
            return answer.into_extracted(opts, format.map(|f| f.as_str()));
        }
        Err(ExtractError::Unavailable(format!(
            "docling-serve at {} has no conversion endpoint (last tried {})",
            self.base_url,
            last_missing.unwrap_or_default()
        )))
    }
}

fn to_format(output: OutputFormat) -> &'static str {
    match output {
        OutputFormat::Markdown => "md",
        OutputFormat::Text => "text",
    }
}

fn file_name(name: &str, format: Option<crate::DocumentFormat>) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let base = if base.is_empty() { "document" } else { base };
    match format {
        Some(f)
            if !base
                .to_ascii_lowercase()
                .ends_with(&format!(".{}", f.extension())) =>
        {
            format!("{base}.{}", f.extension())
        }
        _ => base.to_owned(),
    }
}

/// Only the extraction's own deadline is a (permanent) timeout: a docling-serve that could
/// not be reached, or did not answer, within the client's limits may well on the next try.
fn transport_error(e: reqwest::Error, deadline: Option<Instant>) -> ExtractError {
    if e.is_timeout() && deadline.is_some_and(|d| Instant::now() >= d) {
        ExtractError::Timeout
    } else if e.is_timeout() {
        ExtractError::Unavailable(format!("docling-serve did not answer in time: {e}"))
    } else {
        ExtractError::Unavailable(format!("request to docling-serve failed: {e}"))
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> ExtractError {
    let detail: String = String::from_utf8_lossy(body).chars().take(300).collect();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ExtractError::too_large(format!(
            "docling-serve refused the document as too large: {detail}"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ExtractError::UnsupportedFormat(format!(
            "docling-serve cannot read this format: {detail}"
        )),
        // 504 is docling-serve's own answer when a conversion waits past its
        // DOCLING_SERVE_MAX_SYNC_WAIT, its queue included, or a proxy's in front of it: a
        // busy server, retried like the other 5xx.
        _ => ExtractError::Unavailable(format!("docling-serve answered {status}: {detail}")),
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, ExtractError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, deadline))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ExtractError::too_large(format!(
                "the docling-serve answer exceeds {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct ConvertResponse {
    #[serde(default)]
    document: Option<ExportDocument>,
    status: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    processing_time: Option<f64>,
}

#[derive(Deserialize)]
struct ExportDocument {
    #[serde(default)]
    md_content: Option<String>,
    #[serde(default)]
    text_content: Option<String>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    component_type: Option<String>,
    #[serde(default)]
    module_name: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

impl ErrorItem {
    fn describe(&self) -> String {
        let place: Vec<&str> = [&self.component_type, &self.module_name]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let message = self.error_message.as_deref().unwrap_or("unknown error");
        if place.is_empty() {
            message.to_owned()
        } else {
            format!("{}: {message}", place.join("/"))
        }
    }
}

impl ConvertResponse {
    fn into_extracted(
        self,
        opts: &ExtractOptions,
        source_format: Option<&str>,
    ) -> Result<Extracted, ExtractError> {
        let errors: Vec<String> = self.errors.iter().map(ErrorItem::describe).collect();
        if !matches!(self.status.as_str(), "success" | "partial_success") {
            let why = if errors.is_empty() {
                "no reason given".to_owned()
            } else {
                errors.join("; ")
            };
            return Err(ExtractError::corrupt(format!(
                "docling-serve could not convert the document (status {}): {why}",
                self.status
            )));
        }
        let document = self.document.unwrap_or(ExportDocument {
            md_content: None,
            text_content: None,
        });
        let (preferred, other) = match opts.output {
            OutputFormat::Markdown => (document.md_content, document.text_content),
            OutputFormat::Text => (document.text_content, document.md_content),
        };
        let content = preferred.or(other).unwrap_or_default().trim().to_owned();
        if content.chars().count() > opts.max_output_chars {
            return Err(ExtractError::too_large(format!(
                "the extracted text exceeds {} characters",
                opts.max_output_chars
            )));
        }

        let mut metadata = Map::new();
        if let Some(format) = source_format {
            metadata.insert("source_format".into(), Value::String(format.to_owned()));
        }
        metadata.insert("extractor".into(), Value::String("docling".into()));
        metadata.insert("docling_status".into(), Value::String(self.status));
        if let Some(seconds) = self.processing_time {
            metadata.insert("processing_time_s".into(), Value::from(seconds));
        }
        if !errors.is_empty() {
            metadata.insert(
                "docling_errors".into(),
                Value::Array(errors.into_iter().map(Value::String).collect()),
            );
        }
        Ok(Extracted {
            title: crate::text::markdown_title(&content),
            content,
            format: opts.output,
            pages: None,
            metadata,
        })
    }
}
