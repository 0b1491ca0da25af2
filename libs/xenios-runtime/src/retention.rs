//! The database keeps what it still needs and no more: finished jobs, the LLM audit trail
//! and cached extractions each expire after their own time (`retention.*`). Rows go in small
//! batches, so a pass never holds the one SQLite writer (or PostgreSQL's row locks) for long,
//! and a pass ends after a bounded number of batches; the next pass takes the rest. Every API
//! instance runs this beside its sweeper: deleting what another instance deleted is a no-op.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use xenios_config::RetentionSettings;
use xenios_store::{Store, StoreError};

/// Rows deleted per statement: small, because a finished extraction's row can hold megabytes
/// of text, and freeing them holds the SQLite writer; the jobs' own writes queue behind it.
const BATCH: u32 = 200;
/// Statements per table and pass: up to 100 000 rows, the rest at the next pass.
const MAX_BATCHES: u32 = 500;

/// How long each kind of row is kept; `None` keeps it for ever.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionPolicy {
    /// Finished jobs, counted from their submission.
    pub jobs: Option<Duration>,
    pub inference_logs: Option<Duration>,
    /// Cached extractions, counted from their last use.
    pub extraction_cache: Option<Duration>,
}

impl From<&RetentionSettings> for RetentionPolicy {
    /// `retention.*_days`, where 0 means for ever.
    fn from(settings: &RetentionSettings) -> Self {
        let days = |n: u32| (n > 0).then(|| Duration::from_secs(u64::from(n) * 24 * 3600));
        RetentionPolicy {
            jobs: days(settings.jobs_days),
            inference_logs: days(settings.inference_logs_days),
            extraction_cache: days(settings.extraction_cache_days),
        }
    }
}

/// Rows one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub inference_logs: u64,
    pub extraction_cache: u64,
}

/// Purges every `interval` until `stop` fires.
pub async fn run(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    stop: CancellationToken,
) {
    crate::periodic::every(interval, &stop, || async {
        match purge_expired(&store, &policy).await {
            Ok(purged) if purged == Purged::default() => {}
            Ok(purged) => tracing::info!(
                jobs = purged.jobs,
                inference_logs = purged.inference_logs,
                extraction_cache = purged.extraction_cache,
                "deleted expired records"
            ),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    })
    .await;
}

/// One pass over the three tables.
pub async fn purge_expired(store: &Store, policy: &RetentionPolicy) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    if let Some(keep) = policy.jobs {
        purged.jobs = purge_table("jobs", keep, |before| {
            store.purge_finished_jobs(before, BATCH)
        })
        .await?;
    }
    if let Some(keep) = policy.inference_logs {
        purged.inference_logs = purge_table("inference_logs", keep, |before| {
            store.purge_inference_logs(before, BATCH)
        })
        .await?;
    }
    if let Some(keep) = policy.extraction_cache {
        purged.extraction_cache = purge_table("extraction_cache", keep, |before| {
            store.purge_extraction_cache(before, BATCH)
        })
        .await?;
    }
    Ok(purged)
}

/// Deletes batch after batch of rows older than `keep` until one comes back short.
async fn purge_table<F, Fut>(
    table: &'static str,
    keep: Duration,
    delete: F,
) -> Result<u64, StoreError>
where
    F: Fn(chrono::DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let before = Utc::now()
        .checked_sub_signed(keep)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let deleted = delete(before).await?;
        total += deleted;
        metrics::counter!("xenios_records_purged_total", "table" => table).increment(deleted);
        if deleted < u64::from(BATCH) {
            break;
        }
    }
    Ok(total)
}
