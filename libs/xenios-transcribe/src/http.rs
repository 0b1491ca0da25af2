//! One provider call: send, classify the status, read a bounded answer, parse it.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TranscribeError;

/// A word-level transcript of hours of audio is some megabytes; beyond this it is not one.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Only the start of an error body is worth reading.
const MAX_ERROR_BYTES: usize = 16 << 10;

pub(crate) async fn call<T: DeserializeOwned>(
    provider: &'static str,
    request: RequestBuilder,
) -> Result<T, TranscribeError> {
    let failed = |message: String, retryable: bool| TranscribeError::Provider {
        provider,
        status: None,
        message,
        retryable,
        retry_after: None,
    };
    let mut response = request
        .send()
        .await
        .map_err(|e| failed(describe(e), true))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let retry_after = retry_after(response.headers());
        let (body, _) = read_capped(&mut response, MAX_ERROR_BYTES).await;
        return Err(TranscribeError::Provider {
            provider,
            status: Some(status),
            message: format!("HTTP {status}: {}", error_message(&body)),
            retryable: matches!(status, 408 | 429) || status >= 500,
            retry_after,
        });
    }
    let body = match read_capped(&mut response, MAX_ANSWER_BYTES).await {
        (body, Ok(true)) => body,
        (_, Ok(false)) => return Err(failed("the answer is too large".into(), false)),
        (_, Err(e)) => return Err(failed(describe(e), true)),
    };
    serde_json::from_slice(&body).map_err(|e| failed(format!("unreadable answer: {e}"), true))
}

/// Reads at most `cap` bytes; `Ok(false)` when the body went on beyond them.
async fn read_capped(response: &mut Response, cap: usize) -> (Bytes, Result<bool, reqwest::Error>) {
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    return (body.freeze(), Ok(false));
                }
            }
            Ok(None) => return (body.freeze(), Ok(true)),
            Err(e) => return (body.freeze(), Err(e)),
        }
    }
}

/// The provider's own words from an error body: Deepgram's `err_msg`, OpenAI's
/// `error.message`, a server's `detail`, or the start of the text.
fn error_message(body: &[u8]) -> String {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = json.as_ref().and_then(|v| {
        [
            v.get("err_msg"),
            v.get("message"),
            v.pointer("/error/message"),
            v.get("error"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .map(str::to_owned)
    });
    let text = field.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "no details".into(),
        None => text,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_providers_message() {
        let deepgram = br#"{"err_code":"Bad Request","err_msg":"corrupt or unsupported data","request_id":"x"}"#;
        assert_eq!(error_message(deepgram), "corrupt or unsupported data");
        let openai =
            br#"{"error":{"message":"Invalid file format.","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "Invalid file format.");
        assert_eq!(error_message(b"upstream timed out\n"), "upstream timed out");
        assert_eq!(error_message(b""), "no details");
        assert_eq!(error_message(&[b'x'; 1000]).chars().count(), 301);
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
    }
}
