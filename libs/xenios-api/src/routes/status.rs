use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use utoipa::ToSchema;
use xenios_contract::JobKind;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Reading worker registrations stops here; a fleet this size is a configuration mistake.
const MAX_WORKERS_LISTED: usize = 1000;
const NATS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize, ToSchema)]
pub struct ServiceStatus {
    service: &'static str,
    version: &'static str,
    environment: String,
    queues: Vec<QueueStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueStatus {
    kind: String,
    /// Commands waiting to be pulled.
    pending: u64,
    /// Commands delivered and not yet acknowledged.
    in_flight: u64,
    /// Commands delivered more than once and still unacknowledged.
    redelivered: u64,
    /// Consumer instances registered in `WORKERS` that serve this kind.
    consumers_online: u64,
}

/// Service version and, per queue: pending, in flight, redelivered, consumers online.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    security(("api_key" = [])),
    responses((status = 200, body = ServiceStatus), (status = 401, body = crate::error::ErrorBody),
               (status = 503, body = crate::error::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<ServiceStatus>, ApiError> {
    let online = tokio::time::timeout(NATS_TIMEOUT, workers_by_kind(&state))
        .await
        .map_err(|_| ApiError::unavailable("NATS did not answer in time"))??;
    let mut queues = Vec::new();
    let stream = state
        .jetstream
        .get_stream(xenios_contract::subjects::JOBS_STREAM)
        .await
        .map_err(|e| ApiError::unavailable(format!("stream JOBS: {e}")))?;
    for kind in JobKind::ALL {
        let info = tokio::time::timeout(NATS_TIMEOUT, stream.consumer_info(kind.as_str()))
            .await
            .map_err(|_| ApiError::unavailable("NATS did not answer in time"))?;
        let (pending, in_flight, redelivered) = match info {
            Ok(info) => (
                info.num_pending,
                info.num_ack_pending as u64,
                info.num_redelivered as u64,
            ),
            Err(_) => (0, 0, 0),
        };
        queues.push(QueueStatus {
            kind: kind.as_str().to_owned(),
            pending,
            in_flight,
            redelivered,
            consumers_online: online.get(kind.as_str()).copied().unwrap_or(0),
        });
    }
    Ok(Json(ServiceStatus {
        service: "xenios-api",
        version: env!("CARGO_PKG_VERSION"),
        environment: format!("{:?}", state.settings.environment).to_lowercase(),
        queues,
    }))
}

async fn workers_by_kind(state: &AppState) -> Result<HashMap<String, u64>, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| ApiError::unavailable(format!("WORKERS: {e}"));
    let kv = state
        .jetstream
        .get_key_value(xenios_contract::subjects::WORKERS_BUCKET)
        .await
        .map_err(|e| unavailable(&e))?;
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| unavailable(&e))?
        .take(MAX_WORKERS_LISTED)
        .try_collect()
        .await
        .map_err(|e| unavailable(&e))?;
    let mut online = HashMap::new();
    for key in keys {
        let Some(value) = kv.get(&key).await.map_err(|e| unavailable(&e))? else {
            continue;
        };
        let record: xenios_contract::WorkerRecord = match serde_json::from_slice(&value) {
            Ok(record) => record,
            Err(_) => continue,
        };
        for kind in record.kinds {
            *online.entry(kind.as_str().to_owned()).or_insert(0) += 1;
        }
    }
    Ok(online)
}
