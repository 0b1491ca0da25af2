//! One place that sets up logs and metrics for a process. Libraries only emit (`tracing`
//! macros, `metrics` macros); binaries call [`init`] once.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
use xenios_config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration error: LOG_LEVEL (log.level): {0}")]
    LogLevel(String),
}

/// Readable logs in development, JSON lines in staging and production. Safe to call more than
/// once (tests start many applications in one process): later calls keep the first setup.
pub fn init_logging(settings: &Settings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log.level)
        .map_err(|e| TelemetryError::LogLevel(e.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = if settings.environment.is_production()
        || settings.environment == xenios_config::Environment::Staging
    {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    } else {
        // Colours only for a person at a terminal: a log redirected to a file or a pipe
        // (`make run > dev.log`, a service manager) stays plain text.
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .try_init()
    };
    // Already initialised by an earlier caller in this process: that setup stands.
    let _ = result;
    Ok(())
}

/// Latency buckets, in seconds, from sub-millisecond API answers to long transcriptions.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Creates the job series of `kinds` at zero (a series that already exists keeps its value).
/// A counter that first appears at 1 has no `increase()`, so an alert on it (the first dead
/// letter after a restart) would never fire; and a dashboard shows 0, not "no data".
pub fn register_job_series<'a>(kinds: impl IntoIterator<Item = &'a str>) {
    for kind in kinds {
        let kind = kind.to_owned();
        metrics::counter!("xenios_jobs_submitted_total", "kind" => kind.clone()).increment(0);
        for outcome in ["succeeded", "failed", "cancelled"] {
            metrics::counter!("xenios_jobs_completed_total", "kind" => kind.clone(), "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!("xenios_job_redeliveries_total", "kind" => kind.clone()).increment(0);
        metrics::counter!("xenios_dead_letters_total", "kind" => kind.clone()).increment(0);
        metrics::gauge!("xenios_jobs_in_flight", "kind" => kind).increment(0.0);
    }
}

/// The process's Prometheus recorder, installed on first use; `/metrics` renders it.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test binary embedding several
            // services); the handle still renders what this recorder would have held.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Series that only ever grow by fractions: `metrics` counters are integers, so they are kept
/// as gauges and exposed as the counters they are (`rate()` and `increase()` read them right
/// either way; the type is what dashboards, `promtool` and OpenMetrics go by).
const FRACTIONAL_COUNTERS: &[&str] = &["xenios_llm_cost_usd_total"];

/// The Prometheus text of `handle`, every series with its true type.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    for name in FRACTIONAL_COUNTERS {
        let kept_as = format!("# TYPE {name} gauge\n");
        if let Some(at) = text.find(&kept_as) {
            text.replace_range(at..at + kept_as.len(), &format!("# TYPE {name} counter\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fractional_counter_is_exposed_as_a_counter() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("xenios_llm_cost_usd_total", "task" => "chat").increment(0.25);
            metrics::gauge!("xenios_jobs_in_flight", "kind" => "echo").increment(1.0);
        });
        let text = render(&handle);
        assert!(
            text.contains("# TYPE xenios_llm_cost_usd_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("xenios_llm_cost_usd_total{task=\"chat\"} 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE xenios_jobs_in_flight gauge\n"),
            "{text}"
        );
    }
}
