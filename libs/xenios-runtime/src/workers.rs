use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use xenios_contract::subjects::{consumer_name, JOBS_STREAM, WORKERS_BUCKET};
use xenios_contract::{JobKind, WorkerRecord};

use crate::runtime::Shared;

/// A key unique to this process, made of the characters NATS KV keys allow.
fn instance_id(binary: &str, host: &str) -> String {
    let raw = format!(
        "{binary}-{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Registers this process in `WORKERS` and renews the entry every heartbeat (the bucket's TTL
/// removes an instance that stops renewing); also samples queue depths for the metrics.
/// Deregisters on stop.
pub(crate) async fn register(
    shared: Arc<Shared>,
    binary: String,
    kinds: Vec<JobKind>,
    stop: CancellationToken,
) {
    let host = hostname();
    let mut record = WorkerRecord {
        instance: instance_id(&binary, &host),
        binary,
        kinds: kinds.clone(),
        host,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: chrono::Utc::now(),
        heartbeat_at: chrono::Utc::now(),
        in_flight: 0,
    };
    let every = Duration::from_secs(shared.settings.consumer.heartbeat_secs.max(1));
    let mut bucket = None;
    loop {
        if bucket.is_none() {
            bucket = shared.jetstream.get_key_value(WORKERS_BUCKET).await.ok();
        }
        if let Some(kv) = &bucket {
            record.heartbeat_at = chrono::Utc::now();
            record.in_flight = shared.in_flight.load(Ordering::Relaxed);
            let value = serde_json::to_vec(&record).expect("worker record serializes");
            if let Err(e) = kv.put(&record.instance, value.into()).await {
                tracing::warn!(error = %e, "cannot renew the worker registration");
            }
        }
        sample_queues(&shared, &kinds).await;
        tokio::select! {
            _ = tokio::time::sleep(if bucket.is_some() { every } else { Duration::from_millis(500) }) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(kv) = bucket {
        let _ = kv.delete(&record.instance).await;
    }
}

async fn sample_queues(shared: &Shared, kinds: &[JobKind]) {
    let Ok(stream) = shared.jetstream.get_stream(JOBS_STREAM).await else {
        return;
    };
    for kind in kinds {
        let name = consumer_name(*kind);
        if let Ok(info) = stream.consumer_info(name).await {
            metrics::gauge!("xenios_queue_pending", "consumer" => name)
                .set(info.num_pending as f64);
            metrics::gauge!("xenios_queue_ack_pending", "consumer" => name)
                .set(info.num_ack_pending as f64);
        }
    }
}
