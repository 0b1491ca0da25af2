//! What is done to jobs outside a request (`xenios jobs …`), the same way the routes do it.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use xenios_contract::envelope::{CancelRequest, DeadLetter, JobCommand, JobEvent, JobsErased};
use xenios_contract::subjects::{events_subject, CANCEL_SUBJECT, JOBS_ERASED_SUBJECT};
use xenios_contract::{JobId, JobStatus};
use xenios_store::{CancelOutcome, JobRecord, NewJob, Store, StoreError};

use crate::events::EventHub;
pub use crate::routes::jobs::JobView;

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot reach the consumers: {0}")]
    Broker(String),
}

/// Cancels a job: a queued one is finished as cancelled here and never starts; for a running
/// one the cancellation is recorded and its consumer told on `ctl.jobs.cancel`.
pub async fn cancel(
    store: &Store,
    nats: &async_nats::Client,
    jetstream: &jetstream::Context,
    id: JobId,
) -> Result<CancelOutcome, OperationError> {
    let outcome = store.cancel_job(id).await?;
    match &outcome {
        CancelOutcome::Cancelled(job) => {
            let attempt = u32::try_from(job.attempts).unwrap_or(0);
            let event = JobEvent::status(JobStatus::Cancelled, attempt, Utc::now());
            if let Ok(ack) = jetstream
                .publish(events_subject(id), event.to_bytes())
                .await
            {
                let _ = tokio::time::timeout(PUBLISH_TIMEOUT, ack).await;
            }
            metrics::counter!("xenios_jobs_completed_total", "kind" => job.kind.as_str(), "outcome" => "cancelled").increment(1);
        }
        CancelOutcome::Requested(_) => {
            let request = CancelRequest { job_id: id };
            nats.publish(CANCEL_SUBJECT, request.to_bytes())
                .await
                .map_err(|e| OperationError::Broker(e.to_string()))?;
        }
        CancelOutcome::AlreadyFinished(_) | CancelOutcome::NotFound => {}
    }
    Ok(outcome)
}

/// A finished job's kind, input and webhook submitted again as a new job of the same user and
/// correlation id: a dead letter's second chance once its cause is fixed. The finished job
/// stays as it was.
pub struct Resubmitted {
    pub job: JobRecord,
    /// Why the broker did not take the command now; the job is recorded, so the sweeper
    /// publishes it.
    pub not_published: Option<String>,
}

/// Why `job` cannot be submitted again, if it cannot: only a failed or cancelled job can.
pub fn not_resubmittable(job: &JobRecord) -> Option<String> {
    (!matches!(job.status, JobStatus::Failed | JobStatus::Cancelled)).then(|| {
        format!(
            "is {}: only a failed or cancelled job is submitted again",
            job.status
        )
    })
}

/// The new job that submits `finished` again.
pub(crate) fn resubmission(finished: &JobRecord) -> NewJob {
    NewJob {
        id: xenios_contract::new_job_id(),
        kind: finished.kind,
        user_id: finished.user_id.clone(),
        input: finished.input.clone(),
        correlation_id: finished.correlation_id.clone(),
        idempotency_key: None,
        // The new job is announced where the first would have been.
        webhook_url: finished.webhook.as_ref().map(|w| w.url.clone()),
    }
}

pub async fn resubmit(
    store: &Store,
    nats: &async_nats::Client,
    jetstream: &jetstream::Context,
    finished: &JobRecord,
) -> Result<Resubmitted, OperationError> {
    let job = store.create_job(resubmission(finished)).await?.into_job();
    let command = job.command();
    let not_published = publish_command(nats, jetstream, &command, &job.correlation_id)
        .await
        .err();
    Ok(Resubmitted { job, not_published })
}

/// Publishes a job's `queued` event and its command, and waits for the stream to take the
/// command: its sequence in `JOBS`, or the broker's error in words.
pub(crate) async fn publish_command(
    nats: &async_nats::Client,
    jetstream: &jetstream::Context,
    command: &JobCommand,
    correlation_id: &str,
) -> Result<u64, String> {
    let queued = JobEvent::status(JobStatus::Queued, 0, command.submitted_at);
    // Same connection as the command, so it is stored before any event of the consumer; no
    // acknowledgement asked (the stream captures the subject all the same).
    let _ = nats
        .publish(events_subject(command.job_id), queued.to_bytes())
        .await;
    send_command(jetstream, command, correlation_id).await
}

/// Commands one instance sends again at once (see [`resend_command`]), each holding the job's
/// input for up to twenty seconds; past it the sweeper takes the rest.
pub(crate) const MAX_RESENDS: usize = 256;

/// Sends a recorded job's command again while the broker refuses it for a moment (see
/// [`xenios_contract::FailoverPauses`]), for up to `within`; its `Nats-Msg-Id` (the job id)
/// makes the stream drop a copy of one it did take. Without it, a job submitted while a
/// cluster fails over would wait for the sweeper's delay (a minute) before it starts. `true`
/// once the stream holds the command.
pub(crate) async fn resend_command(
    jetstream: &jetstream::Context,
    command: &JobCommand,
    correlation_id: &str,
    within: Duration,
) -> bool {
    let mut pauses = xenios_contract::FailoverPauses::within(within);
    while pauses.wait().await {
        if send_command(jetstream, command, correlation_id)
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// Publishes a job's command and waits for the stream to take it.
async fn send_command(
    jetstream: &jetstream::Context,
    command: &JobCommand,
    correlation_id: &str,
) -> Result<u64, String> {
    let sent = jetstream
        .publish_with_headers(
            command.subject(),
            command.headers(correlation_id),
            command.to_bytes(),
        )
        .await;
    match sent {
        Ok(ack) => match tokio::time::timeout(PUBLISH_TIMEOUT, ack).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err("timed out waiting for the stream".to_owned()),
        },
        Err(e) => Err(error_chain(&e)),
    }
}

/// The broker's error, with its causes, as an operation's.
fn broker(e: &dyn std::error::Error) -> OperationError {
    OperationError::Broker(error_chain(e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Rows deleted per statement while erasing: the SQLite writer is shared with every job.
const ERASE_BATCH: u32 = 500;
/// A user's jobs one erasure looks at (newest first: the ones whose events are still kept);
/// the ones past it are left to the next call.
const ERASE_SCAN: u32 = 100_000;
/// Job ids per message on `ctl.jobs.erased`: well under the broker's payload limit.
const ERASED_PER_MESSAGE: usize = 1000;
/// Commands of `JOBS` one erasure reads (its default `max_msgs`: all of them) while looking
/// for the user's.
const MAX_COMMANDS_SCANNED: u64 = 100_000;
/// Sequences of `JOBS_DLQ` one erasure reads (one request each) while looking for a user's
/// letters; past them the erasure is not complete.
const MAX_DEAD_LETTERS_SCANNED: u64 = 100_000;

/// What erasing a user's data removed, and what it could not yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub user_id: String,
    /// Finished jobs, with their inputs and results.
    pub jobs_deleted: u64,
    /// Queued jobs cancelled first, so that they never run.
    pub jobs_cancelled: u64,
    /// Running jobs left, told to stop: they (with what they still write) go at the next
    /// erasure, as does a job that finished while this one ran.
    pub jobs_still_running: u64,
    /// Jobs whose events (status, tokens, results) were purged from `JOB_EVENTS`.
    pub job_events_purged: u64,
    /// The user's commands in `JOBS_DLQ`.
    pub dead_letters_deleted: u64,
    /// Commands of the user's jobs (with their inputs) still in `JOBS`, taken by no consumer.
    pub job_commands_deleted: u64,
    /// Uploaded files.
    pub files_deleted: u64,
    /// Cached extractions of the documents the user's jobs read.
    pub cached_extractions_deleted: u64,
    /// Rows of the LLM audit trail. What today's calls cost stays, as one row without them,
    /// for the daily LLM budget: the next erasure after the day, or the retention pass,
    /// deletes it.
    pub inference_logs_deleted: u64,
    /// Nothing of the user is left: the store holds no job of theirs, and every queued command
    /// and dead letter was looked at.
    pub complete: bool,
}

/// Erases what the service holds of `user_id`: jobs (queued ones cancelled first, running ones
/// told to stop and left for the next call), their events, queued commands and dead letters,
/// uploaded files, cached extractions of the documents they read, and the LLM audit rows.
/// Safe to repeat: each call takes what is left, and `complete` says when nothing is. Events
/// older than `events_max_age` have expired on their own and are not looked for. `hub`, the
/// events relay of the API that erases, forgets the erased jobs at once; every API is told on
/// `ctl.jobs.erased`.
pub async fn erase_user(
    store: &Store,
    nats: &async_nats::Client,
    jetstream: &jetstream::Context,
    hub: Option<&EventHub>,
    user_id: &str,
    events_max_age: Duration,
) -> Result<Erased, OperationError> {
    let mut erased = Erased {
        user_id: user_id.to_owned(),
        ..Erased::default()
    };
    let jobs = store.user_jobs(user_id, ERASE_SCAN).await?;
    // Only these go from the store: a job that finishes while this call runs writes its last
    // events (and its dead letter, its cached extraction) after they were looked for here.
    let mut finished: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.status.is_terminal())
        .map(|j| j.id)
        .collect();
    for job in jobs.iter().filter(|j| !j.status.is_terminal()) {
        if let CancelOutcome::Cancelled(_) = cancel(store, nats, jetstream, job.id).await? {
            // Its last event was published above, before the purge below.
            erased.jobs_cancelled += 1;
            finished.push(job.id);
        }
    }

    let events = jetstream
        .get_stream_no_info(xenios_contract::subjects::EVENTS_STREAM)
        .await
        .map_err(|e| broker(&e))?;
    let recent = Utc::now() - chrono::Duration::from_std(events_max_age).unwrap_or_default();
    for job in jobs.iter().filter(|j| j.updated_at >= recent) {
        let purged = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            events.purge().filter(events_subject(job.id)),
        )
        .await
        .map_err(|_| OperationError::Broker("JOB_EVENTS did not answer a purge".into()))?
        .map_err(|e| broker(&e))?;
        erased.job_events_purged += u64::from(purged.purged > 0);
    }

    let dead_letters = erase_dead_letters(jetstream, user_id).await?;
    erased.dead_letters_deleted = dead_letters.deleted;
    erased.files_deleted = erase_files(jetstream, user_id).await?;

    let mut documents: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.document_sha256.as_deref())
        .collect();
    documents.sort_unstable();
    documents.dedup();
    for sha256 in documents {
        erased.cached_extractions_deleted += store.erase_cached_extractions(sha256).await?;
    }
    // Before the records go: a consumer that takes a command whose job is cancelled skips it,
    // one whose job is gone may begin it (an LLM call starts while its record is looked for).
    let commands = erase_commands(jetstream, &finished).await?;
    erased.job_commands_deleted = commands.deleted;
    erased.jobs_deleted = store.erase_finished_jobs(user_id, &finished).await?;
    // The API that submitted a job keeps its events in memory and would still serve them.
    if let Some(hub) = hub {
        hub.forget_erased(&finished);
    }
    for job_ids in finished.chunks(ERASED_PER_MESSAGE) {
        let erasure = JobsErased {
            job_ids: job_ids.to_vec(),
        };
        nats.publish(JOBS_ERASED_SUBJECT, erasure.to_bytes())
            .await
            .map_err(|e| broker(&e))?;
    }
    // The day's spending stays (as one row without the calls) or erasing would renew the
    // user's daily LLM budget.
    let (today, _) = crate::budget::day_of(Utc::now());
    erased.inference_logs_deleted = store
        .erase_inference_logs_of(user_id, today, ERASE_BATCH)
        .await?;
    // A job that finished meanwhile is still there: the next call takes it with what it wrote.
    let left = store.user_jobs(user_id, ERASE_SCAN).await?;
    erased.jobs_still_running = left.iter().filter(|j| !j.status.is_terminal()).count() as u64;
    erased.complete = left.is_empty() && dead_letters.whole && commands.whole;
    Ok(erased)
}

/// What a look through a stream for a user's messages did.
#[derive(Debug, PartialEq, Eq)]
struct MessagesErased {
    deleted: u64,
    /// Every letter was read: the scan neither stopped at its bound nor at a failed read.
    whole: bool,
}

/// Deletes the user's dead letters from `JOBS_DLQ`.
async fn erase_dead_letters(
    jetstream: &jetstream::Context,
    user_id: &str,
) -> Result<MessagesErased, OperationError> {
    let mut dlq = jetstream
        .get_stream(xenios_contract::subjects::DLQ_STREAM)
        .await
        .map_err(|e| broker(&e))?;
    let state = dlq.info().await.map_err(|e| broker(&e))?.state.clone();
    if state.messages == 0 {
        return Ok(MessagesErased {
            deleted: 0,
            whole: true,
        });
    }
    let sequences = state.first_sequence..=state.last_sequence;
    erase_dead_letters_in(&dlq, sequences, user_id, MAX_DEAD_LETTERS_SCANNED).await
}

/// Deletes the user's dead letters among the first `max_scanned` of `sequences`.
async fn erase_dead_letters_in(
    dlq: &jetstream::stream::Stream,
    sequences: std::ops::RangeInclusive<u64>,
    user_id: &str,
    max_scanned: u64,
) -> Result<MessagesErased, OperationError> {
    use jetstream::stream::RawMessageErrorKind;
    let (first, last) = sequences.into_inner();
    let end = last.min(first.saturating_add(max_scanned.saturating_sub(1)));
    let mut erased = MessagesErased {
        deleted: 0,
        whole: end == last,
    };
    for sequence in first..=end {
        let message = match dlq.get_raw_message(sequence).await {
            Ok(message) => message,
            // A gap: a letter deleted or expired meanwhile.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            // The rest waits for the next erasure, which the answer asks for: each read past
            // a broker that stopped answering would wait out its timeout.
            Err(e) => {
                tracing::warn!(error = %e, sequence, "cannot read a dead letter; erasure incomplete");
                erased.whole = false;
                break;
            }
        };
        let letter = DeadLetter::from_slice(&message.payload);
        if letter.is_ok_and(|l| l.command.user_id.as_deref() == Some(user_id))
            && dlq.delete_message(sequence).await.map_err(|e| broker(&e))?
        {
            erased.deleted += 1;
        }
    }
    Ok(erased)
}

/// Deletes the commands of `jobs` still in `JOBS`. A work queue keeps only the commands no
/// consumer has acknowledged yet, at most `jobs_max_msgs`: each read jumps to the next one.
async fn erase_commands(
    jetstream: &jetstream::Context,
    jobs: &[JobId],
) -> Result<MessagesErased, OperationError> {
    use jetstream::stream::RawMessageErrorKind;
    let mut erased = MessagesErased {
        deleted: 0,
        whole: true,
    };
    if jobs.is_empty() {
        return Ok(erased);
    }
    let mut queue = jetstream
        .get_stream(xenios_contract::subjects::JOBS_STREAM)
        .await
        .map_err(|e| broker(&e))?;
    let state = queue.info().await.map_err(|e| broker(&e))?.state.clone();
    if state.messages == 0 {
        return Ok(erased);
    }
    let jobs: std::collections::HashSet<&JobId> = jobs.iter().collect();
    let mut next = state.first_sequence;
    let mut read = 0;
    // What comes after `last_sequence` is newer than every job being erased.
    while next <= state.last_sequence {
        if read == MAX_COMMANDS_SCANNED {
            erased.whole = false;
            break;
        }
        read += 1;
        let message = match queue.get_first_raw_message_by_subject("jobs.>", next).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => {
                tracing::warn!(error = %e, next, "cannot read a job command; erasure incomplete");
                erased.whole = false;
                break;
            }
        };
        next = message.sequence + 1;
        let command = JobCommand::from_slice(&message.payload);
        if !command.is_ok_and(|c| jobs.contains(&c.job_id)) {
            continue;
        }
        match queue.delete_message(message.sequence).await {
            Ok(true) => erased.deleted += 1,
            // A consumer acknowledged it meanwhile, which is as good.
            _ if is_gone(&queue, message.sequence).await => {}
            _ => erased.whole = false,
        }
    }
    Ok(erased)
}

/// Whether the stream no longer holds the message at `sequence`.
async fn is_gone(stream: &jetstream::stream::Stream, sequence: u64) -> bool {
    use jetstream::stream::RawMessageErrorKind;
    matches!(stream.get_raw_message(sequence).await, Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound)
}

/// Deletes the files the user uploaded; how many.
async fn erase_files(jetstream: &jetstream::Context, user_id: &str) -> Result<u64, OperationError> {
    use futures::StreamExt;
    let bucket = jetstream
        .get_object_store(xenios_contract::subjects::FILES_BUCKET)
        .await
        .map_err(|e| broker(&e))?;
    let mut listed = bucket.list().await.map_err(|e| broker(&e))?;
    let mut theirs = Vec::new();
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| broker(&e))?;
        if crate::routes::files::owner_of(&info) == Some(user_id) {
            theirs.push(info.name);
        }
    }
    for name in &theirs {
        bucket.delete(name).await.map_err(|e| broker(&e))?;
    }
    Ok(theirs.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenios_contract::JobKind;

    async fn dead_letter(js: &jetstream::Context, user_id: &str) {
        let letter = DeadLetter {
            command: JobCommand {
                job_id: xenios_contract::new_job_id(),
                kind: JobKind::Echo,
                user_id: Some(user_id.into()),
                input: serde_json::json!({"message": "hi"}),
                submitted_at: Utc::now(),
            },
            error: xenios_contract::JobError {
                code: "boom".into(),
                message: "failed".into(),
                retryable: false,
            },
            attempts: 3,
            failed_at: Utc::now(),
        };
        let headers = letter.headers("corr");
        js.publish_with_headers(letter.subject(), headers, letter.to_bytes())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// A scan of `JOBS_DLQ` cut short, at its bound or by a read the broker did not answer,
    /// is not a whole one: the erasure cannot say that nothing of the user is left.
    #[tokio::test]
    async fn a_dead_letter_scan_cut_short_is_not_whole() {
        let server = xenios_devstack::NatsServer::start().unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        xenios_contract::streams::apply(&js, &Default::default())
            .await
            .unwrap();
        for user in ["gone", "stays", "gone"] {
            dead_letter(&js, user).await;
        }
        let dlq = js
            .get_stream(xenios_contract::subjects::DLQ_STREAM)
            .await
            .unwrap();

        let bounded = erase_dead_letters_in(&dlq, 1..=3, "gone", 2).await.unwrap();
        assert_eq!(
            bounded,
            MessagesErased {
                deleted: 1,
                whole: false
            }
        );
        let rest = erase_dead_letters_in(&dlq, 1..=3, "gone", 3).await.unwrap();
        assert_eq!(
            rest,
            MessagesErased {
                deleted: 1,
                whole: true
            },
            "the deleted letter is a gap"
        );

        let impatient = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_millis(300)))
            .connect(server.url())
            .await
            .unwrap();
        let dlq = jetstream::new(impatient)
            .get_stream(xenios_contract::subjects::DLQ_STREAM)
            .await
            .unwrap();
        server.freeze();
        let unanswered = erase_dead_letters_in(&dlq, 1..=3, "gone", 3).await;
        server.thaw();
        assert_eq!(
            unanswered.unwrap(),
            MessagesErased {
                deleted: 0,
                whole: false
            }
        );
        assert_eq!(
            erase_dead_letters(&js, "gone").await.unwrap(),
            MessagesErased {
                deleted: 0,
                whole: true
            }
        );
    }
}
