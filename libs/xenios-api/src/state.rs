use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use xenios_auth::Authenticator;
use xenios_config::Settings;
use xenios_store::Store;

use crate::events::EventHub;
use crate::rate_limit::RateLimits;

/// Everything a handler may reach. One reference count to clone: axum clones the state for
/// every extractor and middleware of every request, and cloning the parts one by one (the
/// NATS clients above all) showed up in profiles of the job path.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
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
    /// Open event streams, per instance and per user.
    pub sse_slots: crate::events::SseSlots,
    /// Commands the broker refused for a moment, being sent again by this instance (see
    /// `operations::resend_command`). Bounded: past it, the sweeper publishes them.
    pub resends: Arc<tokio::sync::Semaphore>,
}
