use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use xenios_config::FetchSettings;

use crate::address::{forbidden_range, is_metadata_name};
use crate::{FetchError, Refusal};

/// What `url` inputs may reach and how much of them is read.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Hosts reachable although they are or resolve to non-public addresses: names
    /// (`files.internal`) or IP literals (`10.0.0.5`, `::1`), compared exactly and without
    /// case. The exception is per host: a redirect from an allowed host to another host is
    /// judged on its own.
    pub allow_hosts: Vec<String>,
    pub max_bytes: u64,
    /// For the whole fetch: every hop, and the body.
    pub timeout: Duration,
    pub max_redirects: usize,
}

impl From<&FetchSettings> for FetchPolicy {
    fn from(s: &FetchSettings) -> Self {
        FetchPolicy {
            allow_hosts: s.allow_hosts.clone(),
            max_bytes: s.max_bytes,
            timeout: Duration::from_secs(s.timeout_secs),
            max_redirects: s.max_redirects,
        }
    }
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy::from(&FetchSettings::default())
    }
}

impl FetchPolicy {
    /// Whether `host` (a name or an IP literal, with or without IPv6 brackets) is allow-listed.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.allow_hosts.iter().any(|h| normalize_host(h) == host)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Parses `url` and refuses what no policy allows: schemes other than http(s), credentials,
/// no host. Any port is fine. IPv4 literals in odd notations (`2130706433`, `0x7f.1`) come
/// back normalized (`127.0.0.1`), so address checks see the real address.
pub fn check_url_syntax(url: &str) -> Result<Url, FetchError> {
    let url = Url::parse(url.trim()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme(url.scheme().to_owned()).into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Credentials.into());
    }
    if url.host().is_none() {
        return Err(Refusal::MissingHost.into());
    }
    Ok(url)
}

/// Whether `url` may be fetched now: its syntax, and every address its host resolves to.
/// This is the check at submission; [`crate::Fetcher`] checks again on every hop and at
/// connect time, since DNS answers change.
pub async fn check_url(url: &str, policy: &FetchPolicy) -> Result<(), FetchError> {
    let url = check_url_syntax(url)?;
    match check_host_literal(&url, policy)? {
        Some(name) => resolve_checked(&name, policy).await.map(drop),
        None => Ok(()),
    }
}

/// Checks what can be checked without DNS: an IP literal host entirely, a name against the
/// metadata names. Returns the name still to resolve, if any.
pub(crate) fn check_host_literal(
    url: &Url,
    policy: &FetchPolicy,
) -> Result<Option<String>, FetchError> {
    let (host, ip) = match url.host() {
        None => return Err(Refusal::MissingHost.into()),
        Some(url::Host::Domain(name)) => (normalize_host(name), None),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
    };
    if policy.allows_host(&host) {
        return Ok(None);
    }
    match ip {
        Some(addr) => match forbidden_range(addr) {
            Some(range) => Err(Refusal::Address { host, addr, range }.into()),
            None => Ok(None),
        },
        None if is_metadata_name(&host) => Err(Refusal::MetadataHost(host).into()),
        None => Ok(Some(host)),
    }
}

/// Resolves `host` and returns its addresses if every one is public (or the host is
/// allow-listed). One non-public address refuses the host: a client may connect to any of
/// them.
pub(crate) async fn resolve_checked(
    host: &str,
    policy: &FetchPolicy,
) -> Result<Vec<IpAddr>, FetchError> {
    let host = normalize_host(host);
    let allowed = policy.allows_host(&host);
    if !allowed && is_metadata_name(&host) {
        return Err(Refusal::MetadataHost(host).into());
    }
    let resolved: Result<Vec<IpAddr>, _> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|addrs| addrs.map(|a| a.ip()).collect());
    let addrs = match resolved {
        Ok(addrs) => addrs,
        Err(e) if names_no_host(&e) => {
            return Err(FetchError::UnknownHost {
                host,
                message: e.to_string(),
            })
        }
        Err(e) => {
            return Err(FetchError::Resolve {
                host,
                message: e.to_string(),
            })
        }
    };
    if addrs.is_empty() {
        return Err(FetchError::Resolve {
            host,
            message: "no addresses".into(),
        });
    }
    if !allowed {
        for &addr in &addrs {
            if let Some(range) = forbidden_range(addr) {
                return Err(Refusal::Address { host, addr, range }.into());
            }
        }
    }
    Ok(addrs)
}

/// Whether a failed lookup is the DNS's definite answer (NXDOMAIN, or a name without
/// addresses) rather than a resolver that could not answer. The standard library keeps only
/// `gai_strerror`'s text of the `getaddrinfo` error, so its code is told by that text: glibc's
/// and musl's for `EAI_NONAME` and `EAI_NODATA`, macOS's for `EAI_NONAME`. glibc answers
/// `EAI_AGAIN` ("Temporary failure in name resolution") for SERVFAIL, REFUSED and a server
/// that does not answer; that, and any text not listed, stays a transient failure.
fn names_no_host(e: &std::io::Error) -> bool {
    const NO_HOST: [&str; 5] = [
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "Name has no usable address",
        "nodename nor servname provided, or not known",
    ];
    let text = e.to_string();
    NO_HOST.iter().any(|t| text.ends_with(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `lookup_host` says, as glibc, musl and macOS word it: only a definite "no such
    /// host" is one.
    #[test]
    fn a_lookup_failure_names_no_host_only_when_the_dns_said_so() {
        let lookup = |text: &str| {
            std::io::Error::other(format!("failed to lookup address information: {text}"))
        };
        for text in [
            "Name or service not known",
            "No address associated with hostname",
            "Name does not resolve",
            "nodename nor servname provided, or not known",
        ] {
            assert!(names_no_host(&lookup(text)), "{text}");
        }
        for text in [
            "Temporary failure in name resolution",
            "Try again",
            "System error",
        ] {
            assert!(!names_no_host(&lookup(text)), "{text}");
        }
    }

    fn refusal(url: &str) -> Refusal {
        check_url_syntax(url)
            .and_then(|u| check_host_literal(&u, &FetchPolicy::default()))
            .expect_err(url)
            .refusal()
            .cloned()
            .expect(url)
    }

    #[test]
    fn refuses_bad_syntax() {
        assert_eq!(
            refusal("ftp://example.com/a"),
            Refusal::Scheme("ftp".into())
        );
        assert_eq!(
            refusal("file:///etc/passwd"),
            Refusal::Scheme("file".into())
        );
        assert_eq!(refusal("http://user:pw@example.com/"), Refusal::Credentials);
        assert_eq!(refusal("http://user@example.com/"), Refusal::Credentials);
        assert!(matches!(refusal("not a url"), Refusal::Malformed(_)));
        assert!(matches!(refusal("http://"), Refusal::Malformed(_)));
    }

    #[test]
    fn accepts_http_and_https_with_any_port() {
        for url in [
            "http://example.com/",
            "https://example.com:8443/a?b=c",
            "http://8.8.8.8:8080/",
        ] {
            let parsed = check_url_syntax(url).unwrap();
            assert!(check_host_literal(&parsed, &FetchPolicy::default()).is_ok());
        }
    }

    #[test]
    fn sees_through_odd_ipv4_notations() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            assert!(
                matches!(
                    refusal(url),
                    Refusal::Address {
                        range: "loopback",
                        ..
                    }
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn refuses_literals_and_metadata_names() {
        assert!(matches!(
            refusal("http://[::ffff:127.0.0.1]/"),
            Refusal::Address {
                range: "loopback",
                ..
            }
        ));
        assert_eq!(
            refusal("http://metadata.google.internal/computeMetadata/v1/"),
            Refusal::MetadataHost("metadata.google.internal".into())
        );
        assert_eq!(
            refusal("http://METADATA.google.internal./"),
            Refusal::MetadataHost("metadata.google.internal".into())
        );
    }

    #[test]
    fn allow_list_is_per_host() {
        let policy = FetchPolicy {
            allow_hosts: vec!["127.0.0.1".into(), "[::1]".into(), "Files.Internal".into()],
            ..FetchPolicy::default()
        };
        let check = |url: &str| check_host_literal(&check_url_syntax(url).unwrap(), &policy);
        assert_eq!(check("http://127.0.0.1:8080/").unwrap(), None);
        assert_eq!(check("http://[::1]/").unwrap(), None);
        assert!(check("http://127.0.0.2/").is_err());
        assert!(check("http://10.0.0.1/").is_err());
        assert!(policy.allows_host("files.internal."));
    }
}
