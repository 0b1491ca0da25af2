use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use xenios_store::Store;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Probes {
    store: Store,
    nats: async_nats::Client,
}

/// A consumer's own small HTTP server: `/metrics`, `/health`, `/health/live`, `/health/ready`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    store: Store,
    nats: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = xenios_telemetry::metrics();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move { xenios_telemetry::render(&handle) }),
        )
        .route(
            "/health",
            get(|| async { Json(json!({"status": "healthy"})) }),
        )
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/health/ready", get(ready))
        .with_state(Probes { store, nats });
    tracing::info!(addr = %listener.local_addr()?, "metrics and health listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(probes): State<Probes>) -> impl IntoResponse {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, probes.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let nats = match xenios_contract::probe(&probes.nats, PROBE_TIMEOUT).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let ok = database == "ok" && nats == "ok";
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"status": if ok { "ready" } else { "not_ready" }, "database": database, "nats": nats}),
        ),
    )
}
