//! The store, not the broker, is the system of record: a job the store still holds as
//! `queued` past the sweeper's delay is published again. That covers a crash between
//! recording and publishing, a broker that lost acknowledged messages, and a command a
//! consumer terminated on its last delivery. Re-publishing is safe: a command for a job that
//! already started or finished is acked and skipped by the consumers.
//!
//! A job the store holds as `running` whose lease nobody renewed for
//! `consumer.abandoned_after_secs` has no consumer, and the broker will not deliver its command
//! again: the deliveries were spent (a consumer that kept dying, NAKs while the database was
//! away) or the broker lost it. Such a job is queued and published again while it has tries
//! left, and failed and dead-lettered once it has not, so it never stays `running` for ever.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use xenios_contract::envelope::{DeadLetter, JobEvent};
use xenios_contract::subjects::{consumer_name, events_subject, JOBS_STREAM, MSG_ID_HEADER};
use xenios_contract::{JobError, JobKind, JobStatus};
use xenios_store::{JobRecord, Store};

use crate::{dead_letter, publish};

/// Jobs re-published per sweep at most; the next sweep takes the rest.
const BATCH: u32 = 500;

/// What the sweeper does, and when.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// A queued job is published again this long after it was last published.
    pub republish_after: Duration,
    /// A running job whose lease was not renewed for this long is abandoned.
    pub abandoned_after: Duration,
    /// Tries per job (`consumer.max_attempts`): an abandoned job that had them all fails.
    pub max_attempts: u32,
}

/// Sweeps every `interval` until `stop` fires.
pub async fn run(
    store: Store,
    jetstream: jetstream::Context,
    policy: SweepPolicy,
    interval: Duration,
    stop: CancellationToken,
) {
    crate::periodic::every(interval, &stop, || async {
        match reap_abandoned(&store, &jetstream, policy).await {
            Ok(Reaped {
                requeued: 0,
                failed: 0,
            }) => {}
            Ok(reaped) => tracing::warn!(
                requeued = reaped.requeued,
                failed = reaped.failed,
                "sweeper took up running jobs nobody held"
            ),
            Err(e) => tracing::warn!(error = %e, "sweep of abandoned jobs failed"),
        }
        match sweep_once(&store, &jetstream, policy.republish_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(republished = n, "sweeper re-published queued jobs"),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("store: {0}")]
    Store(#[from] xenios_store::StoreError),
    #[error("publish: {0}")]
    Publish(String),
}

/// One sweep: re-publishes every job queued for longer than `delay` since it was last
/// published or due again after a retry (or recorded), except those of a kind with a backlog.
/// Returns how many were published.
///
/// A backlog (commands waiting in `JOBS` for the kind's consumer) may hold the job's own
/// command, and once the duplicate window has passed, a copy would be stored beside it: every
/// sweep would add one more command per waiting job, filling the bounded stream. A job the
/// broker lost waits instead until its kind's backlog is gone, which it would have waited in
/// line anyway.
pub async fn sweep_once(
    store: &Store,
    jetstream: &jetstream::Context,
    delay: Duration,
) -> Result<usize, SweepError> {
    let older_than = chrono::Utc::now()
        - chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
    let mut kinds = Vec::new();
    for kind in JobKind::ALL {
        if !has_backlog(jetstream, kind).await {
            kinds.push(kind);
        }
    }
    let jobs = store.jobs_to_republish(older_than, &kinds, BATCH).await?;
    let mut published = 0;
    for job in jobs {
        republish(store, jetstream, &job, republished_msg_id(&job)).await?;
        published += 1;
    }
    Ok(published)
}

/// Not the job id of the first publish: the command it names may be gone within the duplicate
/// window (terminated on its last delivery, lost by the broker), and the copy would be dropped
/// as a duplicate of it. The time of the job's last publish instead: sweeps that saw the same
/// job (two APIs, or a sweep whose `mark_published` failed) send one copy between them.
fn republished_msg_id(job: &JobRecord) -> String {
    let last_published = job.published_at.unwrap_or(job.created_at);
    format!("{}.{}", job.id, last_published.timestamp_micros())
}

/// Whether commands of `kind` wait in `JOBS` for a consumer. Unknown (no consumer yet, the
/// broker unreachable) counts as none, so the job is published: a duplicate is harmless.
async fn has_backlog(jetstream: &jetstream::Context, kind: JobKind) -> bool {
    let Ok(stream) = jetstream.get_stream_no_info(JOBS_STREAM).await else {
        return false;
    };
    stream
        .consumer_info(consumer_name(kind))
        .await
        .is_ok_and(|info| info.num_pending > 0)
}

/// `msg_id` replaces the job id as `Nats-Msg-Id`, for a command that must not be taken for a
/// duplicate of one published within the window.
async fn republish(
    store: &Store,
    jetstream: &jetstream::Context,
    job: &JobRecord,
    msg_id: String,
) -> Result<(), SweepError> {
    let command = job.command();
    let mut headers = command.headers(&job.correlation_id);
    // Parsed: a name given as text is a custom header to async-nats, kept beside the standard
    // `Nats-Msg-Id` the command's headers hold, and the broker would read whichever went first.
    let msg_id_header: async_nats::header::HeaderName =
        MSG_ID_HEADER.parse().expect("a valid header name");
    headers.insert(msg_id_header, msg_id);
    confirmed(jetstream, command.subject(), headers, command.to_bytes()).await?;
    store.mark_published(job.id).await?;
    metrics::counter!("xenios_jobs_republished_total", "kind" => job.kind.as_str()).increment(1);
    Ok(())
}

async fn confirmed(
    jetstream: &jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<(), SweepError> {
    publish::confirmed(jetstream, subject, headers, payload)
        .await
        .map(drop)
        .map_err(SweepError::Publish)
}

/// Abandoned jobs taken up by one sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub requeued: usize,
    pub failed: usize,
}

/// One sweep over running jobs nobody holds (see the module's documentation). Another API
/// instance sweeping at the same time is harmless: the store settles each job once.
pub async fn reap_abandoned(
    store: &Store,
    jetstream: &jetstream::Context,
    policy: SweepPolicy,
) -> Result<Reaped, SweepError> {
    let stale_before =
        Utc::now() - chrono::Duration::from_std(policy.abandoned_after).unwrap_or_default();
    let mut reaped = Reaped::default();
    for job in store.abandoned_jobs(stale_before, BATCH).await? {
        let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
        let give_up = attempts >= policy.max_attempts;
        let error = JobError {
            code: "abandoned".into(),
            message: format!(
                "attempt {attempts} lost its consumer (no lease renewal for {} s)",
                policy.abandoned_after.as_secs()
            ),
            retryable: !give_up,
        };
        // The letter first: a job is failed only once its letter is held (see dead_letter.rs).
        // Should it not go out, the job stays as it is and the next sweep tries again.
        if give_up {
            let letter = DeadLetter {
                command: job.command(),
                error: error.clone(),
                attempts,
                failed_at: Utc::now(),
            };
            if !dead_letter::send(jetstream, &letter, &job.correlation_id, 1, Duration::ZERO).await
            {
                continue;
            }
        }
        let Some(job) = store
            .settle_abandoned(job.id, stale_before, &error, give_up)
            .await?
        else {
            if give_up {
                // Its consumer renewed the lease between the two: the job runs on, and the
                // letter stands as a record of the lapse.
                tracing::warn!(job_id = %job.id, "an abandoned job came back after its dead letter went out");
            }
            continue;
        };
        let kind = job.kind.as_str();
        if give_up {
            let finished = job.finished_at.unwrap_or(job.updated_at);
            // The terminal status is stored: clients following the job learn its end.
            tell_watchers(
                jetstream,
                &job,
                [
                    JobEvent::Error(error),
                    JobEvent::status(JobStatus::Failed, attempts, finished),
                ],
            )
            .await;
            metrics::counter!("xenios_jobs_completed_total", "kind" => kind, "outcome" => "failed")
                .increment(1);
            reaped.failed += 1;
        } else {
            tell_watchers(
                jetstream,
                &job,
                [
                    JobEvent::Error(error),
                    JobEvent::status(JobStatus::Queued, attempts, job.updated_at),
                ],
            )
            .await;
            // One command per attempt: the job's own id could fall within the duplicate window
            // of its first publish. Should this fail, the job is queued and unpublished, and
            // the next sweep publishes it.
            let msg_id = format!("{}.{attempts}", job.id);
            republish(store, jetstream, &job, msg_id).await?;
            reaped.requeued += 1;
        }
    }
    Ok(reaped)
}

/// Publishes a job's events in order, each stored before the next goes out.
async fn tell_watchers(jetstream: &jetstream::Context, job: &JobRecord, events: [JobEvent; 2]) {
    let subject = events_subject(job.id);
    for event in events {
        let sent = confirmed(
            jetstream,
            subject.clone(),
            Default::default(),
            event.to_bytes(),
        );
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, job_id = %job.id, "job event not confirmed");
        }
    }
}
