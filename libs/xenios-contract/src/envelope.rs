//! The bodies and headers on the wire: commands on `jobs.<kind>`, events on `events.<job_id>`,
//! cancellations on `ctl.jobs.cancel`, erasures on `ctl.jobs.erased`, dead letters on
//! `dlq.jobs.<kind>`. All JSON.

use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ContractError;
use crate::job::{JobError, JobId, JobKind, JobStatus, Progress};
use crate::subjects::{
    dlq_subject, events_subject, jobs_subject, CORRELATION_ID_HEADER, ERROR_HEADER, MSG_ID_HEADER,
    REPLY_HEADER,
};
use crate::tools::ToolCallDelta;

/// A job command, published on `jobs.<kind>` with the headers from [`JobCommand::headers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCommand {
    pub job_id: JobId,
    pub kind: JobKind,
    pub user_id: Option<String>,
    pub input: Value,
    pub submitted_at: DateTime<Utc>,
}

impl JobCommand {
    pub fn subject(&self) -> String {
        jobs_subject(self.kind)
    }

    /// Where this job's events go (`events.<job_id>`), also sent as `Xenios-Reply`.
    pub fn reply_subject(&self) -> String {
        events_subject(self.job_id)
    }

    /// `Nats-Msg-Id` = job id (the same submission published twice within the duplicate window
    /// is stored once; the sweeper's copies replace it), `Xenios-Correlation-Id`, and
    /// `Xenios-Reply` = `events.<job_id>`.
    pub fn headers(&self, correlation_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header_name(MSG_ID_HEADER), self.job_id.to_string());
        headers.insert(header_name(CORRELATION_ID_HEADER), correlation_id);
        headers.insert(header_name(REPLY_HEADER), self.reply_subject());
        headers
    }

    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_slice(body: &[u8]) -> Result<Self, ContractError> {
        decode("job command", body)
    }
}

/// The value of a header, if the message has it. Use this rather than `HeaderMap::get(&str)`:
/// async-nats makes a `&str` into a custom header name, which never equals the standard
/// `Nats-Msg-Id` it parsed off the wire.
pub fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let name: HeaderName = name.parse().ok()?;
    headers?.get(name).map(|v| v.as_str())
}

fn header_name(name: &'static str) -> HeaderName {
    name.parse()
        .expect("the contract's header names are valid header names")
}

/// The body of a message on `events.<job_id>`: `{"type": "...", "data": {...}}`. The `type` is
/// the SSE `event:` name and `data` the SSE `data:` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum JobEvent {
    Status(StatusChange),
    Progress(Progress),
    Token(Token),
    /// The job's result value, as stored.
    Result(Value),
    /// The job's result, too large to travel as an event (the broker's messages are bounded):
    /// it is read from the store, and the API relays it as the SSE `result` event.
    #[serde(rename = "result_stored")]
    ResultStored(StoredResult),
    Error(JobError),
}

/// Where a result too large for an event is: in the store, `bytes` long as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: JobStatus,
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

/// A piece of streamed LLM output: text, or a piece of a tool call (with `text` empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: every event of an LLM stream is a `Token`, and the API holds many of them.
    pub tool_call: Option<Box<ToolCallDelta>>,
}

impl JobEvent {
    pub fn status(status: JobStatus, attempt: u32, at: DateTime<Utc>) -> Self {
        JobEvent::Status(StatusChange {
            status,
            attempt,
            at,
        })
    }

    pub fn token(text: impl Into<String>) -> Self {
        JobEvent::Token(Token {
            text: text.into(),
            tool_call: None,
        })
    }

    pub fn tool_call_delta(delta: ToolCallDelta) -> Self {
        JobEvent::Token(Token {
            text: String::new(),
            tool_call: Some(Box::new(delta)),
        })
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            JobEvent::Status(_) => "status",
            JobEvent::Progress(_) => "progress",
            JobEvent::Token(_) => "token",
            JobEvent::Result(_) | JobEvent::ResultStored(_) => "result",
            JobEvent::Error(_) => "error",
        }
    }

    /// The SSE stream of a job ends after this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobEvent::Status(s) if s.status.is_terminal())
    }

    /// The `data` object alone, as JSON text: the SSE `data:` field.
    pub fn sse_data(&self) -> String {
        let data = match self {
            JobEvent::Status(s) => serde_json::to_string(s),
            JobEvent::Progress(p) => serde_json::to_string(p),
            JobEvent::Token(t) => serde_json::to_string(t),
            JobEvent::Result(v) => serde_json::to_string(v),
            JobEvent::ResultStored(r) => serde_json::to_string(r),
            JobEvent::Error(e) => serde_json::to_string(e),
        };
        data.expect("event data has only string map keys, so it always serializes")
    }

    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_slice(body: &[u8]) -> Result<Self, ContractError> {
        decode("job event", body)
    }
}

/// Published on `ctl.jobs.cancel`; the consumer running the job interrupts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub job_id: JobId,
}

impl CancelRequest {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_slice(body: &[u8]) -> Result<Self, ContractError> {
        decode("cancel request", body)
    }
}

/// Published on `ctl.jobs.erased`: jobs whose data was erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsErased {
    pub job_ids: Vec<JobId>,
}

impl JobsErased {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_slice(body: &[u8]) -> Result<Self, ContractError> {
        decode("erased jobs", body)
    }
}

/// A command that failed its last try, with the error that ended it, on `dlq.jobs.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub command: JobCommand,
    pub error: JobError,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    pub fn subject(&self) -> String {
        dlq_subject(self.command.kind)
    }

    /// `Nats-Msg-Id` = job id (one dead letter per job even if two consumers race),
    /// `Xenios-Correlation-Id`, and `Xenios-Error` = the error code.
    pub fn headers(&self, correlation_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header_name(MSG_ID_HEADER), self.command.job_id.to_string());
        headers.insert(header_name(CORRELATION_ID_HEADER), correlation_id);
        headers.insert(header_name(ERROR_HEADER), self.error.code.as_str());
        headers
    }

    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_slice(body: &[u8]) -> Result<Self, ContractError> {
        decode("dead letter", body)
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .expect("envelopes have only string map keys, so they always serialize")
        .into()
}

fn decode<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, ContractError> {
    serde_json::from_slice(body).map_err(|source| ContractError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn command() -> JobCommand {
        JobCommand {
            job_id: "0190a6e4-1c2b-7cde-8f00-112233445566".parse().unwrap(),
            kind: JobKind::Echo,
            user_id: Some("user-1".into()),
            input: json!({"message": "hi", "delay_ms": 5}),
            submitted_at: "2025-01-02T03:04:05.678Z".parse().unwrap(),
        }
    }

    #[test]
    fn command_has_the_spec_body_and_headers() {
        let cmd = command();
        let body: Value = serde_json::from_slice(&cmd.to_bytes()).unwrap();
        assert_eq!(
            body,
            json!({
                "job_id": "0190a6e4-1c2b-7cde-8f00-112233445566",
                "kind": "echo",
                "user_id": "user-1",
                "input": {"message": "hi", "delay_ms": 5},
                "submitted_at": "2025-01-02T03:04:05.678Z",
            })
        );
        assert_eq!(JobCommand::from_slice(&cmd.to_bytes()).unwrap(), cmd);
        assert_eq!(cmd.subject(), "jobs.echo");

        let headers = cmd.headers("corr-1");
        let h = |name| header(Some(&headers), name);
        assert_eq!(
            h("Nats-Msg-Id"),
            Some("0190a6e4-1c2b-7cde-8f00-112233445566")
        );
        assert_eq!(h("Xenios-Correlation-Id"), Some("corr-1"));
        assert_eq!(
            h("Xenios-Reply"),
            Some("events.0190a6e4-1c2b-7cde-8f00-112233445566")
        );
        assert_eq!(header(None, "Xenios-Reply"), None);
        assert_eq!(
            headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str()),
            Some("0190a6e4-1c2b-7cde-8f00-112233445566")
        );
    }

    #[test]
    fn a_command_without_user_still_names_the_field() {
        let cmd = JobCommand {
            user_id: None,
            ..command()
        };
        let body: Value = serde_json::from_slice(&cmd.to_bytes()).unwrap();
        assert_eq!(body["user_id"], Value::Null);
        assert_eq!(JobCommand::from_slice(&cmd.to_bytes()).unwrap(), cmd);
    }

    #[test]
    fn events_are_typed_data_objects() {
        let at: DateTime<Utc> = "2025-01-02T03:04:05Z".parse().unwrap();
        let cases = [
            (
                JobEvent::status(JobStatus::Running, 2, at),
                json!({"type": "status", "data": {"status": "running", "attempt": 2, "at": "2025-01-02T03:04:05Z"}}),
            ),
            (
                JobEvent::Progress(Progress {
                    percent: Some(50.0),
                    stage: Some("ocr".into()),
                    message: None,
                }),
                json!({"type": "progress", "data": {"percent": 50.0, "stage": "ocr", "message": null}}),
            ),
            (
                JobEvent::token("Hel"),
                json!({"type": "token", "data": {"text": "Hel"}}),
            ),
            (
                JobEvent::Result(json!({"message": [1, 2]})),
                json!({"type": "result", "data": {"message": [1, 2]}}),
            ),
            (
                JobEvent::Error(JobError {
                    code: "timeout".into(),
                    message: "soft limit reached".into(),
                    retryable: true,
                }),
                json!({"type": "error", "data": {"code": "timeout", "message": "soft limit reached", "retryable": true}}),
            ),
        ];
        for (event, wire) in cases {
            let bytes = event.to_bytes();
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), wire);
            assert_eq!(JobEvent::from_slice(&bytes).unwrap(), event);
            assert_eq!(event.event_type(), wire["type"]);
            let data: Value = serde_json::from_str(&event.sse_data()).unwrap();
            assert_eq!(data, wire["data"]);
        }
    }

    #[test]
    fn a_result_too_large_for_an_event_travels_as_a_reference() {
        let event = JobEvent::ResultStored(StoredResult { bytes: 2_000_000 });
        let wire: Value = serde_json::from_slice(&event.to_bytes()).unwrap();
        assert_eq!(
            wire,
            json!({"type": "result_stored", "data": {"bytes": 2_000_000}})
        );
        assert_eq!(JobEvent::from_slice(&event.to_bytes()).unwrap(), event);
        assert_eq!(event.event_type(), "result");
    }

    #[test]
    fn only_a_final_status_is_terminal() {
        let at = Utc::now();
        assert!(JobEvent::status(JobStatus::Succeeded, 1, at).is_terminal());
        assert!(JobEvent::status(JobStatus::Cancelled, 1, at).is_terminal());
        assert!(!JobEvent::status(JobStatus::Queued, 1, at).is_terminal());
        assert!(!JobEvent::Result(json!(1)).is_terminal());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let err = JobEvent::from_slice(br#"{"type":"confetti","data":{}}"#).unwrap_err();
        assert!(err.to_string().starts_with("malformed job event"), "{err}");
        assert!(JobCommand::from_slice(b"\xff").is_err());
        assert!(CancelRequest::from_slice(b"{}").is_err());
    }

    #[test]
    fn cancel_and_dead_letter_round_trip() {
        let cancel = CancelRequest {
            job_id: command().job_id,
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&cancel.to_bytes()).unwrap(),
            json!({"job_id": "0190a6e4-1c2b-7cde-8f00-112233445566"})
        );
        assert_eq!(
            CancelRequest::from_slice(&cancel.to_bytes()).unwrap(),
            cancel
        );

        let dead = DeadLetter {
            command: command(),
            error: JobError {
                code: "provider_unavailable".into(),
                message: "503 from upstream".into(),
                retryable: true,
            },
            attempts: 5,
            failed_at: "2025-01-02T03:09:00Z".parse().unwrap(),
        };
        assert_eq!(DeadLetter::from_slice(&dead.to_bytes()).unwrap(), dead);
        assert_eq!(dead.subject(), "dlq.jobs.echo");
        let headers = dead.headers("corr-9");
        assert_eq!(
            header(Some(&headers), "Xenios-Error"),
            Some("provider_unavailable")
        );
        assert_eq!(
            header(Some(&headers), "Xenios-Correlation-Id"),
            Some("corr-9")
        );
        assert_eq!(
            header(Some(&headers), "Nats-Msg-Id"),
            Some("0190a6e4-1c2b-7cde-8f00-112233445566")
        );
    }
}
