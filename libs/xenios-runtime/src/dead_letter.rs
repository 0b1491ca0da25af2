//! Dead letters: the command of a job that failed its last try, with its last error, in
//! `JOBS_DLQ`. A job is recorded `failed` only once the stream holds its letter. A broker that
//! cannot take the letter leaves the job `running`, and the sweeper dead-letters it later
//! (see `sweeper.rs`). The job is never `failed` with no letter. The letter's `Nats-Msg-Id`
//! is the job id, so a second copy within the stream's duplicate window is dropped.

use std::time::Duration;

use async_nats::jetstream;
use xenios_contract::envelope::DeadLetter;

use crate::publish::confirmed;

/// Sends the letter, trying `tries` times `pause` apart. `true` once the stream holds it.
pub(crate) async fn send(
    jetstream: &jetstream::Context,
    letter: &DeadLetter,
    correlation_id: &str,
    tries: u32,
    pause: Duration,
) -> bool {
    for attempt in 1..=tries.max(1) {
        let sent = confirmed(
            jetstream,
            letter.subject(),
            letter.headers(correlation_id),
            letter.to_bytes(),
        )
        .await;
        match sent {
            Ok(duplicate) => {
                if !duplicate {
                    let kind = letter.command.kind.as_str();
                    metrics::counter!("xenios_dead_letters_total", "kind" => kind).increment(1);
                }
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, job_id = %letter.command.job_id, attempt, "cannot publish the dead letter");
                if attempt < tries {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    false
}
