//! Every subject, stream, consumer, bucket and header name of the NATS contract (SPEC §4).

use crate::job::{JobId, JobKind};

pub const JOBS_STREAM: &str = "JOBS";
pub const EVENTS_STREAM: &str = "JOB_EVENTS";
pub const DLQ_STREAM: &str = "JOBS_DLQ";

/// Object store bucket holding uploaded files (`file_id` is the object name).
pub const FILES_BUCKET: &str = "FILES";
/// Key-value bucket where consumer instances register and heartbeat.
pub const WORKERS_BUCKET: &str = "WORKERS";

/// Carries `CancelRequest`s to every running consumer (core NATS, not a stream).
pub const CANCEL_SUBJECT: &str = "ctl.jobs.cancel";
/// Carries a job id (as text) from the operator's CLI to every API: the job's webhook is due
/// now (a redelivery) or once the job finishes (a resubmission). Core NATS, not a stream: an
/// API that misses it finds the delivery at its next poll.
pub const WEBHOOKS_WATCH_SUBJECT: &str = "ctl.webhooks.watch";
/// Carries `JobsErased` from an erasure (an API's or the operator's CLI) to every API: each
/// forgets what its memory keeps of those jobs' events. Core NATS, not a stream: an API that
/// misses it (cut off from the broker then) serves them until newer jobs evict them.
pub const JOBS_ERASED_SUBJECT: &str = "ctl.jobs.erased";

/// Set to the job id, so JetStream drops a re-published command within the duplicate window.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
pub const CORRELATION_ID_HEADER: &str = "Xenios-Correlation-Id";
/// The subject where a command's events go: `events.<job_id>`.
pub const REPLY_HEADER: &str = "Xenios-Reply";
/// On a dead letter: the code of the last error, so `nats stream view` shows why.
pub const ERROR_HEADER: &str = "Xenios-Error";

const JOBS_PREFIX: &str = "jobs.";
const EVENTS_PREFIX: &str = "events.";
const DLQ_PREFIX: &str = "dlq.jobs.";

/// `jobs.<kind>`: where commands of one kind are published.
pub fn jobs_subject(kind: JobKind) -> String {
    format!("{JOBS_PREFIX}{kind}")
}

/// `events.<job_id>`: the job's reply subject, captured by `JOB_EVENTS`.
pub fn events_subject(job_id: JobId) -> String {
    format!("{EVENTS_PREFIX}{job_id}")
}

/// `dlq.jobs.<kind>`: where a command goes after its last try.
pub fn dlq_subject(kind: JobKind) -> String {
    format!("{DLQ_PREFIX}{kind}")
}

/// The durable consumer on `JOBS` serving one kind has the kind's name.
pub fn consumer_name(kind: JobKind) -> &'static str {
    kind.as_str()
}

/// The kind a `jobs.<kind>` subject carries, if it is one.
pub fn kind_of_jobs_subject(subject: &str) -> Option<JobKind> {
    subject.strip_prefix(JOBS_PREFIX)?.parse().ok()
}

/// The job an `events.<job_id>` subject belongs to, if it is one.
pub fn job_of_events_subject(subject: &str) -> Option<JobId> {
    subject.strip_prefix(EVENTS_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_spec() {
        let id: JobId = "0190a6e4-1c2b-7cde-8f00-112233445566".parse().unwrap();
        assert_eq!(jobs_subject(JobKind::Llm), "jobs.llm");
        assert_eq!(
            events_subject(id),
            "events.0190a6e4-1c2b-7cde-8f00-112233445566"
        );
        assert_eq!(
            dlq_subject(JobKind::Transcription),
            "dlq.jobs.transcription"
        );
        assert_eq!(consumer_name(JobKind::Echo), "echo");
        for kind in JobKind::ALL {
            assert_eq!(kind_of_jobs_subject(&jobs_subject(kind)), Some(kind));
        }
        assert_eq!(job_of_events_subject(&events_subject(id)), Some(id));
        assert_eq!(kind_of_jobs_subject("jobs.video"), None);
        assert_eq!(job_of_events_subject("events.nope"), None);
        assert_eq!(job_of_events_subject("jobs.llm"), None);
    }
}
