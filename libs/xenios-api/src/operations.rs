//! What is done to jobs outside a request (`xenios jobs …`), the same way the routes do it.

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use xenios_contract::envelope::{CancelRequest, JobCommand, JobEvent};
use xenios_contract::subjects::{events_subject, CANCEL_SUBJECT};
use xenios_contract::{JobId, JobStatus};
use xenios_store::{CancelOutcome, JobRecord, NewJob, Store, StoreError};

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

pub async fn resubmit(
    store: &Store,
    nats: &async_nats::Client,
    jetstream: &jetstream::Context,
    finished: &JobRecord,
) -> Result<Resubmitted, OperationError> {
    let job = store
        .create_job(NewJob {
            id: xenios_contract::new_job_id(),
            kind: finished.kind,
            user_id: finished.user_id.clone(),
            input: finished.input.clone(),
            correlation_id: finished.correlation_id.clone(),
            idempotency_key: None,
            // The new job is announced where the first would have been.
            webhook_url: finished.webhook.as_ref().map(|w| w.url.clone()),
        })
        .await?
        .into_job();
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
