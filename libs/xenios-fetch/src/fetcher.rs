use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{redirect, Client, Response, Url};

use crate::policy::{check_host_literal, check_url_syntax, resolve_checked};
use crate::{FetchError, FetchPolicy};

/// A downloaded body.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// As the server declared it: a hint, not to be trusted over the bytes.
    pub content_type: Option<String>,
    /// Where the body came from, after redirects.
    pub final_url: Url,
}

/// Downloads `url` inputs under a [`FetchPolicy`].
///
/// Every connection's addresses come from a resolver that refuses non-public addresses
/// (unless the host is allow-listed), so the addresses checked are the addresses connected
/// to: a DNS answer that changes between a check and the connection (rebinding) cannot
/// slip through. IP-literal hosts never reach a resolver and are checked before each hop.
/// Redirects are followed here, not by the HTTP client, each hop judged on its own.
/// Proxies from the environment are ignored: through a proxy, the proxy would pick the
/// address.
#[derive(Clone)]
pub struct Fetcher {
    client: Client,
    policy: Arc<FetchPolicy>,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, FetchError> {
        let policy = Arc::new(policy);
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
            .user_agent(concat!("xenios-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Client(describe(e)))?;
        Ok(Fetcher { client, policy })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Downloads `url` whole, within the policy's size and time limits. Dropping the future
    /// closes the connection.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let limit = self.policy.timeout;
        tokio::time::timeout(limit, self.fetch_within_time(url))
            .await
            .unwrap_or(Err(FetchError::Timeout(limit)))
    }

    /// POSTs `body` to `url` under the same address rules, within `timeout`, and returns the
    /// answer's status. No redirect is followed (a 3xx is the receiver's answer), and the
    /// answer's body is not read.
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<u16, FetchError> {
        let url = check_url_syntax(url)?;
        check_host_literal(&url, &self.policy)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let sent = self.client.post(url).headers(headers).body(body).send();
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(FetchError::Timeout(timeout)),
            Ok(Err(e)) => Err(transport_error(e, &host)),
            Ok(Ok(response)) => Ok(response.status().as_u16()),
        }
    }

    async fn fetch_within_time(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut url = check_url_syntax(url)?;
        let mut redirects = 0;
        loop {
            // Names are checked by the resolver when a connection is made.
            check_host_literal(&url, &self.policy)?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| transport_error(e, &host))?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                if redirects == self.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.policy.max_redirects));
                }
                redirects += 1;
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or(FetchError::BadRedirect { host })?;
                url = check_url_syntax(next.as_str())?;
                continue;
            }
            if !response.status().is_success() {
                return Err(FetchError::Status { host, status });
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = read_limited(response, self.policy.max_bytes, &host).await?;
            return Ok(Fetched {
                bytes,
                content_type,
                final_url: url,
            });
        }
    }
}

/// Reads the body chunk by chunk and stops at the first byte past `limit`, so an endless or
/// lying body costs at most `limit` bytes of memory.
async fn read_limited(mut response: Response, limit: u64, host: &str) -> Result<Bytes, FetchError> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(FetchError::TooLarge { limit });
    }
    // The declared length only sizes the first allocation, and not beyond 1 MiB: it may lie.
    let initial = response
        .content_length()
        .unwrap_or(0)
        .min(limit)
        .min(1 << 20);
    let mut body = BytesMut::with_capacity(initial as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, host))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(FetchError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

struct GuardedResolver(Arc<FetchPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let ips = resolve_checked(name.as_str(), &policy).await?;
            // Port 0 is replaced by the URL's port.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A refusal or resolution failure from [`GuardedResolver`] arrives wrapped in the client's
/// connect error; it is found again in the source chain.
fn transport_error(e: reqwest::Error, host: &str) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        source = err.source();
    }
    FetchError::Network {
        host: host.to_owned(),
        message: describe(e),
    }
}

/// The error with its causes, without the URL: its query may hold a signature.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
