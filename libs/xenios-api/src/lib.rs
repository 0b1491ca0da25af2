//! `xenios-api`: the HTTP surface of the fleet. [`Application::build`] assembles everything
//! from a [`Settings`] value; the binary and the tests start it the same way.

pub mod auth;
mod budget;
pub mod correlation;
pub mod error;
pub mod events;
mod openapi;
pub mod operations;
pub mod rate_limit;
mod routes;
pub mod state;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use xenios_auth::Authenticator;
use xenios_config::Settings;
use xenios_contract::JobKind;
use xenios_store::Store;

use crate::error::ApiError;
use crate::rate_limit::RateLimits;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration error: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// `store` and `nats` are connected by the caller, so one process (`xenios dev`) can share
    /// them between the API and its consumers.
    pub async fn build(
        settings: Settings,
        store: Store,
        nats: async_nats::Client,
    ) -> Result<Application, StartError> {
        let auth = Authenticator::new(auth_settings(&settings))
            .map_err(|e| StartError::Config(e.to_string()))?;
        let settings = Arc::new(settings);
        let state = AppState::new(state::Shared {
            jetstream: async_nats::jetstream::new(nats.clone()),
            nats,
            store,
            auth,
            limits: RateLimits::new(&settings.rate_limit),
            metrics: xenios_telemetry::metrics(),
            hub: events::EventHub::default(),
            shutdown: CancellationToken::new(),
            sse_slots: events::SseSlots::new(
                settings.api.max_sse_clients,
                settings.api.max_sse_clients_per_user,
            ),
            resends: Arc::new(tokio::sync::Semaphore::new(operations::MAX_RESENDS)),
            settings: settings.clone(),
        });
        // The API records jobs of every kind, and its sweeper may fail and dead-letter them.
        xenios_telemetry::register_job_series(JobKind::ALL.iter().map(|k| k.as_str()));
        let router = router(state.clone());
        let listener = listen(settings.api.addr).map_err(|source| StartError::Bind {
            addr: settings.api.addr,
            source,
        })?;
        Ok(Application {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: long-lived streams are told to end and
    /// in-flight requests get `api.shutdown_grace_secs` to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let upkeep = spawn_upkeep(state.clone());
        let follower = tokio::spawn(state.hub.clone().follow(
            state.jetstream.clone(),
            state.nats.clone(),
            state.shutdown.clone(),
        ));
        let erasures = tokio::spawn(
            state
                .hub
                .clone()
                .forget_erased_jobs(state.nats.clone(), state.shutdown.clone()),
        );
        let stop = state.shutdown.clone();
        let grace = Duration::from_secs(state.settings.api.shutdown_grace_secs);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests");
            stop.cancel();
        };
        // Events are small writes in quick succession: without TCP_NODELAY, Nagle's algorithm
        // holds each one back until the client's delayed ACK (~40 ms) arrives.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, self.router).with_graceful_shutdown(signal);
        let stopped = state.shutdown.clone();
        let result = tokio::select! {
            result = serve => result,
            _ = async { stopped.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over: closing remaining connections");
                Ok(())
            }
        };
        upkeep.abort();
        follower.abort();
        erasures.abort();
        result
    }
}

fn auth_settings(settings: &Settings) -> xenios_auth::AuthSettings {
    let a = &settings.auth;
    xenios_auth::AuthSettings {
        api_keys: settings
            .api
            .keys
            .iter()
            .map(|k| k.expose().to_owned().into())
            .collect(),
        jwt_secret: a.jwt_secret.as_ref().map(|s| s.expose().to_owned().into()),
        jwks_url: a.jwks_url(),
        audience: a.audience.clone(),
        leeway: Duration::from_secs(a.leeway_secs),
        jwks_cache_ttl: Duration::from_secs(a.jwks_cache_ttl_secs),
        jwks_min_refetch_interval: Duration::from_secs(a.jwks_min_refetch_secs),
        http_timeout: Duration::from_secs(5),
    }
}

/// Periodic housekeeping: histogram upkeep and forgetting idle rate-limit buckets.
fn spawn_upkeep(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            state.metrics.run_upkeep();
            state.limits.prune();
        }
    })
}

/// The whole HTTP surface. Public for tests that want to drive it without a socket.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();

    // Bounded by `api.request_timeout_secs` (an SSE response counts until its stream
    // starts); the LLM routes wait for a model within the `llm` kind's own limits.
    let deadline = Duration::from_secs(settings.api.request_timeout_secs.max(1));
    let jobs = OpenApiRouter::new()
        .routes(routes!(routes::status::status))
        .routes(routes!(routes::me::me))
        .routes(routes!(routes::jobs::submit, routes::jobs::list_jobs))
        .routes(routes!(routes::jobs::get_job))
        .routes(routes!(routes::jobs::cancel_job))
        .routes(routes!(routes::jobs::redeliver_webhook))
        .routes(routes!(routes::jobs::resubmit_job))
        .routes(routes!(routes::jobs::job_events))
        .routes(routes!(routes::usage::usage))
        .routes(routes!(routes::users::erase_user_data))
        .routes(routes!(routes::files::get_file, routes::files::delete_file))
        .routes(routes!(routes::files::list_files))
        .layer(middleware::from_fn_with_state(
            deadline,
            error::within_deadline,
        ));
    let api_v1 = OpenApiRouter::new()
        .merge(jobs)
        .routes(routes!(routes::llm::complete))
        .routes(routes!(routes::llm::stream))
        .layer(middleware::from_fn_with_state(state.clone(), auth::layer))
        .layer(DefaultBodyLimit::max(settings.api.body_limit_bytes));

    // Uploads: authenticated like the rest of /api/v1, with a body limit of their own, and
    // time limits of their own (`files.upload_*`) in place of `api.request_timeout_secs`,
    // which a large upload on a slow link would pass.
    let files = OpenApiRouter::new()
        .routes(routes!(routes::files::upload))
        .layer(middleware::from_fn_with_state(state.clone(), auth::layer))
        .layer(DefaultBodyLimit::max(files_body_limit(
            settings.files.max_bytes,
        )));

    // OpenAI-compatible: its own authentication (the SDKs' bearer key) and error shape.
    let openai = OpenApiRouter::new()
        .routes(routes!(routes::openai::chat_completions))
        .routes(routes!(routes::openai::list_models))
        .routes(routes!(routes::openai::get_model))
        // `xenios/<task>` with its slash as is (newer SDKs send it as `%2F`).
        .route("/v1/models/xenios/{model}", get(routes::openai::get_model))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::openai::auth,
        ))
        .layer(DefaultBodyLimit::max(settings.api.body_limit_bytes));

    let public = OpenApiRouter::new()
        .routes(routes!(routes::health::health))
        .routes(routes!(routes::health::live))
        .routes(routes!(routes::health::ready))
        .routes(routes!(routes::health::metrics));

    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(public)
        .merge(api_v1)
        .merge(files)
        .merge(openai)
        .split_for_parts();
    let api = Arc::new(api);

    let mut router = router.route(
        "/openapi.json",
        get(move || {
            let api = api.clone();
            async move { axum::Json(api.as_ref().clone()) }
        }),
    );
    if !settings.environment.is_production() {
        router = router.route("/docs", get(routes::docs::docs));
    }
    // Around every route with its own layers, so that an answer the authentication gives
    // (401, 429) is counted under its route too.
    let router = router.route_layer(middleware::from_fn(correlation::expose_matched_path));

    router
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("handler panicked"))
        }))
        .layer(cors(&settings.api.cors_origins))
        .layer(middleware::from_fn(correlation::layer))
}

/// The file itself plus room for the multipart framing; the upload counts the file's own
/// bytes against `files.max_bytes`.
fn files_body_limit(max_bytes: u64) -> usize {
    usize::try_from(max_bytes.saturating_add(64 * 1024)).unwrap_or(usize::MAX)
}

/// `origins` were checked at load (`Settings::validate`): `*` alone, or `scheme://host[:port]`.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            correlation::HEADER,
        ])
        .expose_headers([
            correlation::HEADER,
            header::LOCATION,
            header::RETRY_AFTER,
            routes::llm::JOB_ID_HEADER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Connections a burst of clients may have waiting to be accepted (the kernel caps it at
/// `net.core.somaxconn`). tokio's `bind` leaves 128: 256 clients connecting at once overflowed
/// that, and each dropped SYN cost its client a one-second retransmission (bench-llm at 256
/// streams: first-token p99 over 1 s, `ListenOverflows` in `nstat`).
const ACCEPT_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted API can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection completes its handshake once the kernel queues it, accepted or not; one
    /// that finds the queue full has its SYN dropped and retries a second later.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue_without_being_dropped() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The kernel caps every backlog at `somaxconn` (4096 on current kernels, 128 before 5.4).
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = somaxconn.min(300);
        let connects = (0..burst).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let queued = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(queued, burst, "connections dropped by a full accept queue");
        drop(listener);
    }
}
