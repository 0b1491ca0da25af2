//! Publishing to a stream and waiting until it holds the message, bounded in time: for what
//! must outlive a crash (terminal events, dead letters, commands the sweeper sends again).

use std::time::Duration;

use async_nats::jetstream;
use xenios_contract::FailoverPauses;

/// How long one publish may wait for the stream to confirm it.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes and waits until the stream holds the message. `Ok(true)` if the stream dropped
/// it as a duplicate of one it already holds.
pub(crate) async fn confirmed(
    jetstream: &jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<bool, String> {
    let ack = jetstream
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| e.to_string())?;
    let ack = tokio::time::timeout(PUBLISH_TIMEOUT, ack)
        .await
        .map_err(|_| "not confirmed in time".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(ack.duplicate)
}

/// Publishes `messages` to `subject` in order and waits until the stream holds every one, the
/// acks awaited together rather than one by one. What is left unconfirmed is sent again at
/// [`FailoverPauses`] for up to `within`. Each message has a `Nats-Msg-Id`
/// (`<id_prefix>.<index>`), so the stream drops a second copy of one it held but could not
/// confirm. `true` once the stream holds them all.
pub(crate) async fn all_confirmed(
    jetstream: &jetstream::Context,
    subject: &str,
    id_prefix: &str,
    messages: &[bytes::Bytes],
    within: Duration,
) -> bool {
    let mut pauses = FailoverPauses::within(within);
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    for attempt in 1.. {
        let mut acks = Vec::with_capacity(pending.len());
        for &index in &pending {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{id_prefix}.{index}"),
            );
            let published = jetstream
                .publish_with_headers(subject.to_owned(), headers, messages[index].clone())
                .await;
            match published {
                Ok(ack) => acks.push(async move {
                    let confirmed = tokio::time::timeout(PUBLISH_TIMEOUT, ack).await;
                    (index, matches!(confirmed, Ok(Ok(_))))
                }),
                Err(e) => tracing::warn!(error = %e, subject, attempt, "cannot publish"),
            }
        }
        let confirmed: Vec<usize> = futures::future::join_all(acks)
            .await
            .into_iter()
            .filter_map(|(index, confirmed)| confirmed.then_some(index))
            .collect();
        pending.retain(|index| !confirmed.contains(index));
        if pending.is_empty() {
            return true;
        }
        if attempt == 1 {
            tracing::warn!(subject, "not confirmed by the stream; sending again");
        }
        if !pauses.wait().await {
            break;
        }
    }
    false
}
