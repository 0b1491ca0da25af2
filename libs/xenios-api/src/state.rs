use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use xenios_auth::Authenticator;
use xenios_config::Settings;
use xenios_store::Store;

use crate::events::EventHub;
use crate::rate_limit::RateLimits;

/// Everything a handler may reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub auth: Authenticator,
    pub limits: RateLimits,
    pub metrics: PrometheusHandle,
    /// Live job events for this instance's SSE clients.
    pub hub: EventHub,
    /// Fired when the server begins to shut down: long-lived responses (SSE) end on it.
    pub shutdown: CancellationToken,
}
