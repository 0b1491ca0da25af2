//! The store, not the broker, is the system of record: a job the store still holds as
//! `queued` past the sweeper's delay is published again. That covers a crash between
//! recording and publishing, and a broker that lost acknowledged messages. Re-publishing is
//! safe: within the duplicate window JetStream drops the copy (`Nats-Msg-Id` = job id), and a
//! command for a job that already started or finished is acked and skipped by the consumers.

use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;
use xenios_store::Store;

/// Jobs re-published per sweep at most; the next sweep takes the rest.
const BATCH: u32 = 500;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sweeps every `interval` until `stop` fires.
pub async fn run(
    store: Store,
    jetstream: jetstream::Context,
    delay: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        match sweep_once(&store, &jetstream, delay).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(republished = n, "sweeper re-published queued jobs"),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("store: {0}")]
    Store(#[from] xenios_store::StoreError),
    #[error("publish: {0}")]
    Publish(String),
}

/// One sweep: re-publishes every job queued for longer than `delay` since it was last
/// published (or recorded). Returns how many were published.
pub async fn sweep_once(
    store: &Store,
    jetstream: &jetstream::Context,
    delay: Duration,
) -> Result<usize, SweepError> {
    let older_than = chrono::Utc::now()
        - chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
    let jobs = store.jobs_to_republish(older_than, BATCH).await?;
    let mut published = 0;
    for job in jobs {
        let command = job.command();
        let ack = jetstream
            .publish_with_headers(
                command.subject(),
                command.headers(&job.correlation_id),
                command.to_bytes(),
            )
            .await
            .map_err(|e| SweepError::Publish(e.to_string()))?;
        tokio::time::timeout(PUBLISH_TIMEOUT, ack)
            .await
            .map_err(|_| SweepError::Publish("timed out".into()))?
            .map_err(|e| SweepError::Publish(e.to_string()))?;
        store.mark_published(job.id).await?;
        metrics::counter!("xenios_jobs_republished_total", "kind" => job.kind.as_str())
            .increment(1);
        published += 1;
    }
    Ok(published)
}
