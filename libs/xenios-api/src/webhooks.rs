//! Announcing finished jobs at their `webhook_url`: a `POST` of `{"event","job"}` (the job as
//! `GET /api/v1/jobs/{id}` shows it), signed with `webhooks.secret`, tried until the receiver
//! answers 2xx or the tries run out. The store holds each delivery's state, so a delivery
//! survives restarts and several APIs share the work (each try is leased to one of them).
//!
//! The signature, as Stripe's: `Xenios-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is
//! HMAC-SHA256 with the secret over `<t>.<body>`. A receiver recomputes it, compares in
//! constant time, and refuses an old `t` (a replay).

use std::time::Duration;

use axum::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ring::hmac;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use xenios_config::{Secret, WebhookSettings};
use xenios_contract::subjects::WEBHOOKS_WATCH_SUBJECT;
use xenios_contract::JobId;
use xenios_fetch::{FetchError, FetchPolicy, Fetcher};
use xenios_store::{Store, WebhookDue};

use crate::events::{EventHub, WebhooksDue};
use crate::operations::JobView;

/// Deliveries claimed at once. A pass that claimed any is followed by another at once, until
/// one finds none due: a pass stops short of what is due at `BATCH` or `BATCH_BYTES`.
const BATCH: u32 = 32;
/// The jobs a pass claims are loaded whole (an extraction's result can be megabytes): past
/// this many bytes of their inputs and results the rest wait for the next pass, so a burst of
/// large jobs finishing does not swell the API's memory.
const BATCH_BYTES: u64 = xenios_store::PAGE_BYTES;
/// How long past its timeout a try stays leased: a crashed API's try is taken again after.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

pub const SIGNATURE_HEADER: &str = "xenios-signature";
pub const EVENT_HEADER: &str = "xenios-event";

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signing = hmac::Context::with_key(&key);
    signing.update(format!("{timestamp}.").as_bytes());
    signing.update(body);
    format!("t={timestamp},v1={}", hex::encode(signing.sign().as_ref()))
}

/// Delivers due announcements until `stop` fires: when `due` rings (a job submitted here or
/// named by the CLI finished, a redelivery was asked for), when a try this instance scheduled
/// comes due, and every `poll_interval_ms` for the rest (jobs of other instances, watches
/// missed).
pub async fn run(
    store: Store,
    settings: WebhookSettings,
    policy: FetchPolicy,
    due: WebhooksDue,
    stop: CancellationToken,
) {
    let Some(secret) = settings.secret.clone() else {
        return;
    };
    let fetcher = match Fetcher::new(policy) {
        Ok(fetcher) => fetcher,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries cannot start");
            return;
        }
    };
    let delivery = Delivery {
        store,
        fetcher,
        secret,
        settings,
    };
    let interval = Duration::from_millis(delivery.settings.poll_interval_ms);
    // The soonest retry this instance scheduled and no pass has claimed yet: a pass woken
    // early (a ring) must not make a later retry wait for the poll.
    let mut soonest_retry: Option<DateTime<Utc>> = None;
    loop {
        let started = Utc::now();
        let pass = delivery.pass().await;
        // A retry due when the pass began was claimed by it (or by another instance).
        soonest_retry = soonest_retry
            .filter(|at| *at > started)
            .into_iter()
            .chain(pass.next_retry)
            .min();
        if pass.claimed == 0 {
            let retry_in = soonest_retry.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
            let wait = retry_in.map_or(interval, |retry_in| retry_in.min(interval));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = due.rung() => {}
                _ = stop.cancelled() => return,
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// Watches the jobs the operator's CLI names on `ctl.webhooks.watch` (a redelivery, a
/// resubmission) as if they had been submitted here, and wakes a pass at once for one already
/// due; until `stop` fires. Without it such a job's announcement waits for the poll.
pub async fn watch_for_the_operator(
    nats: async_nats::Client,
    hub: EventHub,
    stop: CancellationToken,
) {
    // Subscribing only fails on a closed client; a reconnect subscribes again by itself.
    let Ok(mut watches) = nats.subscribe(WEBHOOKS_WATCH_SUBJECT).await else {
        return;
    };
    loop {
        let watch = tokio::select! {
            watch = watches.next() => watch,
            _ = stop.cancelled() => break,
        };
        let Some(watch) = watch else { break };
        match std::str::from_utf8(&watch.payload).map(str::parse::<JobId>) {
            Ok(Ok(job_id)) => {
                hub.announce_when_finished(job_id);
                hub.webhooks_due().ring();
            }
            _ => tracing::warn!("ignoring a webhook watch that names no job"),
        }
    }
    let _ = watches.unsubscribe().await;
}

/// What one pass did: how many deliveries it claimed, and the soonest retry it scheduled.
struct Pass {
    claimed: usize,
    next_retry: Option<DateTime<Utc>>,
}

struct Delivery {
    store: Store,
    fetcher: Fetcher,
    secret: Secret,
    settings: WebhookSettings,
}

impl Delivery {
    /// Claims what is due and tries each at once.
    async fn pass(&self) -> Pass {
        let timeout = Duration::from_secs(self.settings.timeout_secs);
        let now = Utc::now();
        let lease = chrono::Duration::from_std(timeout + LEASE_MARGIN).unwrap_or_default();
        let due = match self
            .store
            .claim_webhooks(now, now + lease, BATCH, BATCH_BYTES)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries");
                return Pass {
                    claimed: 0,
                    next_retry: None,
                };
            }
        };
        let claimed = due.len();
        let retries =
            futures::future::join_all(due.into_iter().map(|d| self.deliver(d, timeout))).await;
        Pass {
            claimed,
            next_retry: retries.into_iter().flatten().min(),
        }
    }

    /// Tries one delivery; the time of its next try, if it is to be tried again.
    async fn deliver(&self, due: WebhookDue, timeout: Duration) -> Option<DateTime<Utc>> {
        let mut job = due.job;
        let id = job.id;
        let event = format!("job.{}", job.status.as_str());
        // The delivery's own state, mid-try, would only confuse its receiver.
        job.webhook = None;
        let body = payload(&event, JobView::from(job), self.settings.max_body_bytes);
        let timestamp = Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let sig = signature(self.secret.expose(), timestamp, &body);
        for (name, value) in [(SIGNATURE_HEADER, sig), (EVENT_HEADER, event.clone())] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let answer = self.fetcher.post(&due.url, headers, body, timeout).await;
        let outcome = match verdict(answer) {
            Ok(()) => Ok(()),
            Err(Failed { error, last }) => {
                let last = last
                    || due.attempt >= i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
                let next = (!last).then(|| Utc::now() + self.backoff(due.attempt));
                Err((error, next))
            }
        };
        let label = match &outcome {
            Ok(()) => "delivered",
            Err((_, Some(_))) => "retrying",
            Err((_, None)) => "failed",
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(job_id = %id, %event, attempt = due.attempt, "webhook delivered")
            }
            Err((error, next)) => tracing::warn!(
                job_id = %id, %event, attempt = due.attempt, %error, retry_at = ?next,
                "webhook delivery failed"
            ),
        }
        metrics::counter!("xenios_webhook_deliveries_total", "outcome" => label).increment(1);
        let next_retry = match &outcome {
            Err((_, next)) => *next,
            Ok(()) => None,
        };
        if let Err(e) = self.store.finish_webhook(id, due.attempt, outcome).await {
            // The lease runs out and the delivery is tried again: at least once, not once.
            tracing::warn!(job_id = %id, error = %e, "cannot record a webhook delivery");
            return None;
        }
        next_retry
    }

    /// The wait after try `attempt` (from 1): doubled each time, within the configured bounds.
    fn backoff(&self, attempt: i32) -> chrono::Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(40);
        let ms = self
            .settings
            .initial_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.settings.max_backoff_ms);
        chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A try that did not deliver: why, and whether no later try can do better.
#[derive(Debug, PartialEq)]
struct Failed {
    error: String,
    last: bool,
}

/// What a try's answer means: delivered on 2xx. A `410 Gone` says the receiver is gone, and a
/// URL the fetch policy now refuses (its name has come to resolve to a private address) stays
/// refused: neither is tried again. Anything else may pass later.
fn verdict(answer: Result<u16, FetchError>) -> Result<(), Failed> {
    match answer {
        Ok(status) if (200..300).contains(&status) => Ok(()),
        Ok(status) => Err(Failed {
            error: format!("the receiver answered {status}"),
            last: status == 410,
        }),
        Err(e) => Err(Failed {
            last: e.refusal().is_some(),
            error: e.to_string(),
        }),
    }
}

/// `{"event","job"}`; past `max_bytes` without the job's `result`, then its `input`, each
/// marked omitted (the receiver reads them with `GET /api/v1/jobs/{id}`).
fn payload(event: &str, job: JobView, max_bytes: usize) -> Vec<u8> {
    let mut job = serde_json::to_value(job).unwrap_or(Value::Null);
    let mut body = json!({ "event": event, "job": job }).to_string();
    for field in ["result", "input"] {
        if body.len() <= max_bytes {
            break;
        }
        if let Some(fields) = job.as_object_mut() {
            fields.remove(field);
            fields.insert(format!("{field}_omitted"), Value::Bool(true));
        }
        body = json!({ "event": event, "job": job }).to_string();
    }
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_receivers_and_refused_urls_end_the_tries() {
        assert_eq!(verdict(Ok(204)), Ok(()));
        for (answer, last) in [
            (Ok(500), false),
            (Ok(404), false),
            (Ok(410), true),
            (Err(FetchError::Timeout(Duration::from_secs(10))), false),
            (
                Err(FetchError::Network {
                    host: "hooks.example.com".into(),
                    message: "connection refused".into(),
                }),
                false,
            ),
            (
                Err(xenios_fetch::check_url_syntax("ftp://hooks.example.com/x").unwrap_err()),
                true,
            ),
        ] {
            let failed = verdict(answer).unwrap_err();
            assert_eq!(failed.last, last, "{}", failed.error);
        }
    }

    /// Stripe's scheme, checked against an HMAC computed independently (`openssl dgst
    /// -sha256 -hmac whsec-test-0123456789 <<< '1700000000.{"a":1}'`, without the newline).
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            signature("whsec-test-0123456789", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=ba8ec7f38c4e076a99176a1bf98ae9f2f3f4e18412b46a5913ddcf5685932c6a"
        );
    }
}
