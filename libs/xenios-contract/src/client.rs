use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS towards the brokers beyond a `tls://` URL's (the system's trust store, no client
/// certificate). Either part makes TLS required of every server, so that a server offering
/// none is refused rather than spoken to in clear.
#[derive(Clone, Debug, Default)]
pub struct NatsTls {
    /// The CA that signed the servers' certificates, trusted in place of the system's.
    pub ca_file: Option<PathBuf>,
    /// The certificate chain and key this process presents to servers that verify clients.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// Connects to NATS the one way every binary does: all configured servers, optional
/// credentials file, endless reconnects, and a start that does not wait for the broker (a
/// process started before NATS becomes ready when it arrives; readiness probes say so).
pub async fn connect(
    servers: &[String],
    creds: Option<&Path>,
    tls: &NatsTls,
    name: &str,
    request_timeout: Duration,
) -> Result<async_nats::Client, async_nats::Error> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .request_timeout(Some(request_timeout))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("nats connected"),
                async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
    if let Some(path) = creds {
        options = options.credentials_file(path).await?;
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &tls.client_identity {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let servers = servers.join(",");
    Ok(options.connect(servers).await?)
}

/// Whether the broker answers right now: connected, and a round trip (flush) within `timeout`.
pub async fn probe(client: &async_nats::Client, timeout: Duration) -> Result<(), String> {
    use async_nats::connection::State;
    match client.connection_state() {
        State::Connected => {}
        State::Pending => return Err("connecting".into()),
        State::Disconnected => return Err("disconnected".into()),
    }
    match tokio::time::timeout(timeout, client.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}
