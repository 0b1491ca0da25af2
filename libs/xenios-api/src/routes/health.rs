use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// How long one readiness probe may wait on a dependency before calling it down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "healthy" })
}

/// The process is alive (liveness probe).
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "alive" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `ok` or what is wrong with the database.
    database: String,
    /// `ok` or what is wrong with NATS.
    nats: String,
}

/// Ready to serve: the database and NATS both answer (readiness probe).
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness, description = "a dependency is down; each failing part is named"),
))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (database, nats) = tokio::join!(check_database(&state), check_nats(&state));
    let ok = database.is_ok() && nats.is_ok();
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" },
        database: database.err().unwrap_or_else(|| "ok".into()),
        nats: nats.err().unwrap_or_else(|| "ok".into()),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn check_database(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Err(_) => Err("error: timed out".into()),
    }
}

async fn check_nats(state: &AppState) -> Result<(), String> {
    xenios_contract::probe(&state.nats, PROBE_TIMEOUT)
        .await
        .map_err(|e| format!("error: {e}"))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        xenios_telemetry::render(&state.metrics),
    )
}
