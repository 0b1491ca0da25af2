use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;
use xenios_contract::inputs::{parse_echo, EchoFailure};
use xenios_contract::{JobKind, Progress};

use crate::handler::{Handler, HandlerError, HandlerResult, JobContext};

/// The diagnostic job: returns its input message, optionally after a delay, emitting
/// progress, or failing on purpose. Every consumer binary serves it unless configured off.
pub struct EchoHandler;

impl Handler for EchoHandler {
    fn kind(&self) -> JobKind {
        JobKind::Echo
    }

    fn handle(&self, job: JobContext) -> BoxFuture<'_, HandlerResult> {
        Box::pin(async move {
            let input = parse_echo(&job.input)
                .map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
            let steps = input.progress_steps;
            let pause = Duration::from_millis(input.delay_ms) / steps.max(1);
            for step in 1..=steps.max(1) {
                if !pause.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = job.cancel.cancelled() => {
                            return Err(HandlerError::transient("cancelled", "interrupted"));
                        }
                    }
                }
                if steps > 0 {
                    job.progress(Progress {
                        percent: Some(f64::from(step) * 100.0 / f64::from(steps)),
                        stage: Some("echo".into()),
                        message: Some(format!("step {step} of {steps}")),
                    })
                    .await;
                }
            }
            let failing = input.fail_attempts == 0 || job.attempt <= input.fail_attempts;
            match input.fail {
                Some(EchoFailure::Transient) if failing => Err(HandlerError::transient(
                    "echo_transient",
                    format!("failing on purpose (attempt {})", job.attempt),
                )),
                Some(EchoFailure::Permanent) if failing => Err(HandlerError::permanent(
                    "echo_permanent",
                    "failing on purpose",
                )),
                _ => Ok(json!({ "message": input.message })),
            }
        })
    }
}
