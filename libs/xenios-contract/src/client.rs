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

/// Connects to NATS the one way every binary does: all configured servers, with the user and
/// password or token their URLs carry, an optional credentials file and TLS files, endless
/// reconnects, and a start that does not wait for the broker (a process started before NATS
/// becomes ready when it arrives; readiness probes say so).
pub async fn connect(
    servers: &[String],
    creds: Option<&Path>,
    tls: &NatsTls,
    name: &str,
    request_timeout: Duration,
) -> Result<async_nats::Client, async_nats::Error> {
    let (servers, url_credentials) = split_credentials(servers)?;
    let options = match (creds, url_credentials) {
        (Some(path), url_credentials) => {
            // A file that cannot be used stops the start, not only a later reconnect.
            read_credentials(path)?;
            async_nats::ConnectOptions::with_auth_callback(credentials_file_auth(
                path.to_owned(),
                url_credentials,
            ))
        }
        (None, Some(UrlCredentials::UserPassword(user, password))) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (None, Some(UrlCredentials::Token(token))) => async_nats::ConnectOptions::with_token(token),
        (None, None) => async_nats::ConnectOptions::new(),
    };
    let mut options = options
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
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &tls.client_identity {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    // A list, not the URLs joined: async-nats reads a string as one server.
    Ok(options.connect(servers).await?)
}

/// Logs in with the `.creds` file at `path`, read again at every connection as the Go client
/// does, so that rotated credentials (a user JWT that expires) take effect at the next
/// reconnect without a restart; async-nats's own `credentials_file` reads it once. The
/// callback replaces every other way of logging in, so the URLs' own credentials go with it.
fn credentials_file_auth(
    path: PathBuf,
    url_credentials: Option<UrlCredentials>,
) -> impl Fn(Vec<u8>) -> std::future::Ready<Result<async_nats::Auth, async_nats::AuthError>>
       + Send
       + Sync
       + 'static {
    move |nonce| {
        let auth = read_credentials(&path).and_then(|(jwt, key)| {
            let mut auth = async_nats::Auth::new();
            auth.signature = Some(key.sign(&nonce).map_err(|e| e.to_string())?);
            auth.jwt = Some(jwt);
            match &url_credentials {
                Some(UrlCredentials::UserPassword(user, password)) => {
                    auth.username = Some(user.clone());
                    auth.password = Some(password.clone());
                }
                Some(UrlCredentials::Token(token)) => auth.token = Some(token.clone()),
                None => {}
            }
            Ok(auth)
        });
        std::future::ready(auth.map_err(async_nats::AuthError::new))
    }
}

/// The user's JWT and key of a `.creds` file: the first two tokens that stand alone between
/// dashed lines, as NATS clients read them. The file is small and read only when connecting,
/// so it is read in place rather than on a blocking thread.
fn read_credentials(path: &Path) -> Result<(String, nkeys::KeyPair), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut tokens = lines
        .windows(3)
        .filter(|w| w[0].starts_with("---") && w[2].starts_with("---"))
        .map(|w| w[1]);
    let not_credentials = || format!("{} holds no user JWT and seed", path.display());
    let (jwt, seed) = tokens
        .next()
        .zip(tokens.next())
        .ok_or_else(not_credentials)?;
    // The seed's own error is left out: it could echo part of the secret.
    let key = nkeys::KeyPair::from_seed(seed)
        .map_err(|_| format!("{}: the seed is not a valid nkey seed", path.display()))?;
    Ok((jwt.to_owned(), key))
}

/// What a server URL may carry before its host: `user:password@` or `token@`.
#[derive(Debug, PartialEq, Eq)]
enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

/// Takes the credentials out of the servers' URLs (percent-decoded), for the client's
/// options: async-nats leaves a URL's own out of what it sends the server
/// (nats-io/nats.rs#1623), and the deployments give them there (`NATS_URL`). The client keeps
/// one set for every server, so the URLs that carry some must carry the same.
fn split_credentials(servers: &[String]) -> Result<(Vec<String>, Option<UrlCredentials>), String> {
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| "a NATS URL's user or password is not percent-encoded UTF-8".to_owned())
    };
    let mut found: Option<UrlCredentials> = None;
    let mut bare = Vec::with_capacity(servers.len());
    for server in servers {
        // `host:port` alone is a nats:// address to the client.
        let (scheme, rest) = server.split_once("://").unwrap_or(("nats", server));
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            bare.push(server.clone());
            continue;
        };
        let credentials = match userinfo.split_once(':') {
            Some((user, password)) => {
                UrlCredentials::UserPassword(decode(user)?, decode(password)?)
            }
            None => UrlCredentials::Token(decode(userinfo)?),
        };
        if found
            .as_ref()
            .is_some_and(|earlier| *earlier != credentials)
        {
            return Err(
                "the NATS URLs carry different credentials: give every server the same".into(),
            );
        }
        found = Some(credentials);
        bare.push(format!("{scheme}://{host}{path}"));
    }
    Ok((bare, found))
}

/// The pauses between tries at a publish the broker refuses for a moment: a stream whose
/// leader's node was lost refuses publishes ("no responders") until its peers have elected
/// another, which takes them several seconds. A quarter of a second, then doubling up to two
/// seconds, until `within` of the first try has passed.
pub struct FailoverPauses {
    deadline: tokio::time::Instant,
    pause: Duration,
}

impl FailoverPauses {
    pub fn within(within: Duration) -> FailoverPauses {
        FailoverPauses {
            deadline: tokio::time::Instant::now() + within,
            pause: Duration::from_millis(250),
        }
    }

    /// Waits before the next try; `false`, at once, when it would come past the deadline.
    pub async fn wait(&mut self) -> bool {
        if tokio::time::Instant::now() + self.pause >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(2));
        true
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(servers: &[&str]) -> Result<(Vec<String>, Option<UrlCredentials>), String> {
        let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        split_credentials(&servers)
    }

    fn creds_file(dir: &Path, jwt: &str, seed: &str) -> PathBuf {
        let path = dir.join("user.creds");
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_credentials_file_is_read_at_each_login_and_signs_the_servers_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let first = nkeys::KeyPair::new_user();
        let path = creds_file(dir.path(), "eyJfirst", &first.seed().unwrap());
        let url = Some(UrlCredentials::UserPassword("u".into(), "p".into()));
        let login = credentials_file_auth(path.clone(), url);

        let auth = login(b"nonce-1".to_vec()).await.unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("eyJfirst"));
        first
            .verify(b"nonce-1", auth.signature.as_deref().unwrap())
            .expect("signed by the file's key");
        assert_eq!(
            (auth.username.as_deref(), auth.password.as_deref()),
            (Some("u"), Some("p")),
            "the URL's credentials go along"
        );

        // Rotated: the next login uses the new file, not the one read before.
        let second = nkeys::KeyPair::new_user();
        creds_file(dir.path(), "eyJsecond", &second.seed().unwrap());
        let auth = login(b"nonce-2".to_vec()).await.unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("eyJsecond"));
        second
            .verify(b"nonce-2", auth.signature.as_deref().unwrap())
            .unwrap();

        let secret = "SUNOTAREALSEEDBUTASECRETNONETHELESS";
        creds_file(dir.path(), "eyJthird", secret);
        let Err(e) = login(b"nonce-3".to_vec()).await else {
            panic!("a bad seed logged in");
        };
        let e = e.to_string();
        assert!(
            e.contains("not a valid nkey seed") && !e.contains(secret),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
        let e = read_credentials(&path).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn credentials_come_out_of_the_urls_decoded() {
        let (bare, credentials) = split(&[
            "tls://xenios:s3cret%2Fp%40ss@10.0.0.1:4222",
            "tls://xenios:s3cret%2Fp%40ss@10.0.0.2:4222",
        ])
        .unwrap();
        assert_eq!(bare, ["tls://10.0.0.1:4222", "tls://10.0.0.2:4222"]);
        assert_eq!(
            credentials,
            Some(UrlCredentials::UserPassword(
                "xenios".into(),
                "s3cret/p@ss".into()
            ))
        );

        let (bare, credentials) = split(&["nats://t0ken@host:4222", "other:4222"]).unwrap();
        assert_eq!(bare, ["nats://host:4222", "other:4222"]);
        assert_eq!(credentials, Some(UrlCredentials::Token("t0ken".into())));

        let (bare, credentials) = split(&["u:p@host:4222"]).unwrap();
        assert_eq!(bare, ["nats://host:4222"]);
        assert_eq!(
            credentials,
            Some(UrlCredentials::UserPassword("u".into(), "p".into()))
        );

        let (bare, credentials) = split(&["nats://127.0.0.1:4222"]).unwrap();
        assert_eq!(bare, ["nats://127.0.0.1:4222"]);
        assert_eq!(credentials, None);
    }

    #[test]
    fn urls_with_different_credentials_are_refused_without_saying_them() {
        let e = split(&["nats://a:one@h1:4222", "nats://a:two@h2:4222"]).unwrap_err();
        assert!(e.contains("different credentials"), "{e}");
        assert!(!e.contains("one") && !e.contains("two"), "{e}");
        let e = split(&["nats://a:%FF@h1:4222"]).unwrap_err();
        assert!(e.contains("percent-encoded"), "{e}");
    }
}
