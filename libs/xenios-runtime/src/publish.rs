//! Publishing to a stream and waiting until it holds the message, bounded in time: for what
//! must outlive a crash (terminal events, dead letters, commands the sweeper sends again).

use std::time::Duration;

use async_nats::jetstream;

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
