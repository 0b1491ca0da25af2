use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::JobKind;

/// A consumer instance's registration in the `WORKERS` KV bucket (key = `instance`), renewed
/// by heartbeats; the bucket's TTL removes an instance that stopped renewing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub instance: String,
    pub binary: String,
    pub kinds: Vec<JobKind>,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Jobs this instance is running right now.
    pub in_flight: u64,
}
