use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use xenios_config::Settings;
use xenios_contract::JobKind;
use xenios_runtime::Runtime;
use xenios_store::{SqliteSync, Store, StoreOptions};

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Connects the store and, when configured, brings its schema up to date: for the services
/// and `xenios migrate`.
pub async fn connect_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = open_store(settings).await?;
    if settings.database.migrate_on_start {
        store.migrate().await.with_context(|| {
            format!(
                "cannot migrate the database {}",
                xenios_config::redact_url(&settings.database.url)
            )
        })?;
    }
    Ok(store)
}

/// Connects the store for an operator's command, which never migrates (a newer CLI run during
/// a rollout must not change the schema under the running release) and refuses a schema
/// behind this build's.
pub(crate) async fn connect_store_as_is(settings: &Settings) -> anyhow::Result<Store> {
    let store = open_store(settings).await?;
    let url = xenios_config::redact_url(&settings.database.url);
    let pending = store
        .pending_migrations()
        .await
        .with_context(|| format!("cannot read the schema version of the database {url}"))?;
    if !pending.is_empty() {
        store.close().await;
        anyhow::bail!(
            "the database {url} lacks {} migration(s) of this build (from {}): run `xenios migrate` first",
            pending.len(),
            pending[0]
        );
    }
    Ok(store)
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: settings.database.max_connections,
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
        sqlite_sync: match settings.database.sqlite_synchronous.as_str() {
            "normal" => SqliteSync::Normal,
            _ => SqliteSync::Full,
        },
        ..StoreOptions::default()
    };
    let url = xenios_config::redact_url(&settings.database.url);
    Store::connect(&settings.database.url, &options)
        .await
        .with_context(|| format!("cannot open the database {url}"))
}

pub fn stream_settings(settings: &Settings) -> xenios_contract::streams::StreamSettings {
    let n = &settings.nats;
    xenios_contract::streams::StreamSettings {
        replicas: n.replicas,
        jobs_max_msgs: n.jobs_max_msgs,
        jobs_max_bytes: n.jobs_max_bytes,
        events_max_age: Duration::from_secs(n.events_max_age_secs),
        dlq_max_age: Duration::from_secs(n.dlq_max_age_secs),
        files_ttl: Duration::from_secs(settings.files.ttl_secs),
        files_max_bytes: i64::try_from(settings.files.max_total_bytes).unwrap_or(i64::MAX),
    }
}

/// Closes a command's connection once what it published has left for the server: `drain`
/// only asks the connection to close, and the process may end before a cancellation or a
/// webhook watch it published is written.
pub(crate) async fn close_nats(client: async_nats::Client) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    let _ = client.drain().await;
}

/// Connects to NATS; when configured, creates or updates the streams from `streams/` in the
/// background, retrying until the broker is there (a process may start before its broker).
pub async fn connect_nats(settings: &Settings, name: &str) -> anyhow::Result<async_nats::Client> {
    let n = &settings.nats;
    let tls = xenios_contract::NatsTls {
        ca_file: n.tls_ca_file.as_ref().map(PathBuf::from),
        client_identity: n
            .tls_cert_file
            .as_ref()
            .zip(n.tls_key_file.as_ref())
            .map(|(cert, key)| (PathBuf::from(cert), PathBuf::from(key))),
    };
    let client = xenios_contract::connect(
        &n.url,
        n.creds.as_deref().map(std::path::Path::new),
        &tls,
        name,
        Duration::from_millis(n.request_timeout_ms),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot connect to NATS: {e}"))?;
    if n.apply_streams_on_start {
        let js = async_nats::jetstream::new(client.clone());
        let desired = stream_settings(settings);
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            loop {
                match xenios_contract::streams::apply(&js, &desired).await {
                    Ok(report) => {
                        tracing::info!(%report, "streams applied");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply streams yet; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }
    Ok(client)
}

/// A consumer binary (`xenios-llm`, `xenios-extractor`, `xenios-transcriber`): load
/// configuration, then serve `kinds` (plus `echo` unless `consumer.serve_echo` is off) until
/// SIGTERM, with `/metrics` and `/health/*` on `consumer.metrics_addr`.
pub async fn consumer_main(binary: &str, kinds: &[JobKind], config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = xenios_telemetry::init_logging(&settings) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let mut kinds = kinds.to_vec();
    if settings.consumer.serve_echo && !kinds.contains(&JobKind::Echo) {
        kinds.push(JobKind::Echo);
    }
    match serve_worker(settings, binary, &kinds).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = crate::one_line(&e);
            tracing::error!("{e}");
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `xenios-api`: load configuration, connect, serve until SIGTERM.
pub async fn api_main(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = xenios_telemetry::init_logging(&settings) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    match serve_api(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = crate::one_line(&e);
            tracing::error!("{e}");
            eprintln!("xenios-api: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_api(settings: Settings) -> anyhow::Result<()> {
    let store = connect_store(&settings).await?;
    let nats = connect_nats(&settings, "xenios-api").await?;
    let stop = CancellationToken::new();
    let app = xenios_api::Application::build(settings.clone(), store.clone(), nats.clone()).await?;
    let hub = app.state().hub.clone();
    let sweeper = spawn_sweeper(&settings, &store, &nats, hub, stop.clone());
    tracing::info!(addr = %app.local_addr(), "xenios-api listening");
    app.run(shutdown_signal()).await?;
    stop.cancel();
    let _ = sweeper.await;
    let _ = nats.drain().await;
    store.close().await;
    Ok(())
}

/// The API and the consumers of `kinds` (every kind this build serves when empty) in one
/// process, sharing one store handle and one NATS connection: `xenios serve` and `xenios dev`.
/// On one host it needs one process's memory instead of two; on SQLite every write then goes
/// through one group-commit queue. (Throughput against separate processes is the same within
/// the benchmark's noise since the queue has its own connection thread.)
/// `on_listening` runs once the API's socket is bound.
pub async fn serve_all(
    settings: Settings,
    binary: &str,
    kinds: &[JobKind],
    on_listening: impl FnOnce(std::net::SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let store = connect_store(&settings).await?;
    let nats = connect_nats(&settings, binary).await?;
    let runtime = runtime_for(&settings, &store, &nats, binary, kinds)?;
    let stop = CancellationToken::new();
    let app = xenios_api::Application::build(settings.clone(), store.clone(), nats.clone()).await?;
    let hub = app.state().hub.clone();
    let sweeper = spawn_sweeper(&settings, &store, &nats, hub, stop.clone());
    let stopped = stop.clone();
    let consumers = tokio::spawn(runtime.run(async move { stopped.cancelled().await }));
    on_listening(app.local_addr())?;
    app.run(shutdown_signal()).await?;
    // The API has drained; the consumers finish what they hold before the store closes.
    stop.cancel();
    if let Ok(Err(e)) = consumers.await {
        tracing::warn!(error = %e, "consumers ended with an error");
    }
    let _ = sweeper.await;
    let _ = nats.drain().await;
    store.close().await;
    Ok(())
}

/// The sweeper runs beside every API instance: the API is what records jobs. Beside it, the
/// retention pass deletes the records that have expired, and finished jobs are announced at
/// their webhooks (woken by the API's events `hub`, and by the operator's CLI).
pub fn spawn_sweeper(
    settings: &Settings,
    store: &Store,
    nats: &async_nats::Client,
    hub: xenios_api::events::EventHub,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let consumer = &settings.consumer;
    let policy = xenios_runtime::sweeper::SweepPolicy {
        republish_after: Duration::from_secs(consumer.sweeper_delay_secs),
        abandoned_after: Duration::from_secs(consumer.abandoned_after_secs),
        max_attempts: consumer.max_attempts,
    };
    let sweeper = xenios_runtime::sweeper::run(
        store.clone(),
        async_nats::jetstream::new(nats.clone()),
        policy,
        Duration::from_secs(consumer.sweeper_interval_secs),
        stop.clone(),
    );
    let kept = &settings.retention;
    let retention = xenios_runtime::retention::run(
        store.clone(),
        kept.into(),
        Duration::from_secs(kept.interval_secs),
        stop.clone(),
    );
    let webhooks = xenios_api::webhooks::run(
        store.clone(),
        settings.webhooks.clone(),
        xenios_fetch::FetchPolicy::from(&settings.fetch),
        hub.webhooks_due(),
        stop.clone(),
    );
    let watching = settings
        .webhooks
        .secret
        .is_some()
        .then(|| xenios_api::webhooks::watch_for_the_operator(nats.clone(), hub, stop));
    let watches = async move {
        if let Some(watching) = watching {
            watching.await;
        }
    };
    tokio::spawn(async move {
        tokio::join!(sweeper, retention, webhooks, watches);
    })
}

/// The job kinds this build has handlers for.
pub fn known_kinds() -> Vec<JobKind> {
    vec![
        JobKind::Echo,
        JobKind::Llm,
        JobKind::Extraction,
        JobKind::Transcription,
    ]
}

/// A consumer runtime serving `kinds` (all known kinds when empty).
pub fn runtime_for(
    settings: &Settings,
    store: &Store,
    nats: &async_nats::Client,
    binary: &str,
    kinds: &[JobKind],
) -> anyhow::Result<Runtime> {
    let wanted: Vec<JobKind> = if kinds.is_empty() {
        known_kinds()
    } else {
        kinds.to_vec()
    };
    if let Some(unknown) = wanted.iter().find(|k| !known_kinds().contains(k)) {
        anyhow::bail!("this build has no handler for `{unknown}` jobs yet");
    }
    let mut settings = settings.clone();
    settings.consumer.serve_echo = wanted.contains(&JobKind::Echo);
    // Built before anything is served, so a bad routing table stops the start.
    let llm = match wanted.contains(&JobKind::Llm) {
        true => Some(
            xenios_llm::LlmGateway::new(&settings.llm, &settings.providers)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        false => None,
    };
    let extraction = match wanted.contains(&JobKind::Extraction) {
        true => Some(
            xenios_documents::ExtractionHandler::new(&settings)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        false => None,
    };
    // A consumer asked for transcription by name needs a provider to start; one serving
    // every kind (`xenios dev`) starts without and fails those jobs saying why.
    let transcription = match wanted.contains(&JobKind::Transcription) {
        true if kinds.is_empty() => {
            let handler = xenios_documents::TranscriptionHandler::lenient(&settings)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !handler.is_configured() {
                tracing::warn!(
                    "no transcription provider configured: transcription jobs will fail"
                );
            }
            Some(handler)
        }
        true => Some(
            xenios_documents::TranscriptionHandler::new(&settings)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        false => None,
    };
    let mut runtime = Runtime::new(settings, store.clone(), nats.clone(), binary);
    if let Some(gateway) = llm {
        runtime = runtime.with_handler(xenios_llm::LlmHandler::new(Arc::new(gateway)));
    }
    if let Some(handler) = extraction {
        runtime = runtime.with_handler(handler);
    }
    if let Some(handler) = transcription {
        runtime = runtime.with_handler(handler);
    }
    Ok(runtime)
}

/// `xenios worker` and the consumer binaries: consumers plus their metrics/health server.
pub async fn serve_worker(
    settings: Settings,
    binary: &str,
    kinds: &[JobKind],
) -> anyhow::Result<()> {
    let store = connect_store(&settings).await?;
    let nats = connect_nats(&settings, binary).await?;
    let runtime = runtime_for(&settings, &store, &nats, binary, kinds)?;
    // Bound before any job is taken: a consumer nobody can scrape or probe does not start.
    let addr = settings.consumer.metrics_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on XENIOS_METRICS_ADDR {addr}"))?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let metrics = tokio::spawn(xenios_runtime::serve_metrics(
        listener,
        store.clone(),
        nats.clone(),
        async move { stopped.cancelled().await },
    ));
    runtime.run(shutdown_signal()).await?;
    stop.cancel();
    if let Ok(Err(e)) = metrics.await {
        tracing::warn!(error = %e, "metrics server ended with an error");
    }
    let _ = nats.drain().await;
    store.close().await;
    Ok(())
}
