use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Why a URL may not be fetched. Shown to the user who submitted it (the API's
/// `400 invalid_input`, a job's error message), so it names the host, never the whole URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed(String),
    /// Not `http` or `https`.
    Scheme(String),
    /// `user:password@` in the URL.
    Credentials,
    MissingHost,
    MetadataHost(String),
    /// The host is, or resolves to, an address outside public unicast; `range` names it
    /// (`loopback`, `private`, `cloud metadata`, …).
    Address {
        host: String,
        addr: IpAddr,
        range: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "not a valid URL ({e})"),
            Refusal::Scheme(s) => write!(f, "scheme `{s}` is not allowed, only http and https"),
            Refusal::Credentials => f.write_str("URLs with credentials are not allowed"),
            Refusal::MissingHost => f.write_str("the URL has no host"),
            Refusal::MetadataHost(h) => write!(f, "`{h}` is a cloud metadata service"),
            Refusal::Address { host, addr, range } if *host == addr.to_string() => {
                write!(f, "{addr} is not a public address ({range})")
            }
            Refusal::Address { host, addr, range } => {
                write!(
                    f,
                    "`{host}` resolves to {addr}, not a public address ({range})"
                )
            }
        }
    }
}

/// Why a fetch failed. [`FetchError::code`] is the job error's `code`,
/// [`FetchError::retryable`] whether trying again later may succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("URL refused: {0}")]
    Refused(Refusal),
    #[error("the download exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the download took longer than {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("{host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("{host} answered a redirect without a usable Location")]
    BadRedirect { host: String },
    /// The resolver could not answer (no server, SERVFAIL, a timeout): it may later.
    #[error("cannot resolve `{host}`: {message}")]
    Resolve { host: String, message: String },
    /// The DNS answered that the name does not exist or has no address.
    #[error("no such host `{host}`: {message}")]
    UnknownHost { host: String, message: String },
    #[error("fetching from {host} failed: {message}")]
    Network { host: String, message: String },
    #[error("the HTTP client cannot be set up: {0}")]
    Client(String),
}

impl FetchError {
    /// Stable: `url_refused`, `too_large`, `timeout`, `fetch_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Refused(_) => "url_refused",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Timeout(_) => "timeout",
            FetchError::Status { .. }
            | FetchError::TooManyRedirects(_)
            | FetchError::BadRedirect { .. }
            | FetchError::Resolve { .. }
            | FetchError::UnknownHost { .. }
            | FetchError::Network { .. }
            | FetchError::Client(_) => "fetch_failed",
        }
    }

    /// Network and resolver failures, timeouts, 408, 429 and 5xx are transient; refusals,
    /// limits, a name the DNS says does not exist, and other answers are not.
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Timeout(_) | FetchError::Resolve { .. } | FetchError::Network { .. } => {
                true
            }
            FetchError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            FetchError::Refused(_)
            | FetchError::UnknownHost { .. }
            | FetchError::TooLarge { .. }
            | FetchError::TooManyRedirects(_)
            | FetchError::BadRedirect { .. }
            | FetchError::Client(_) => false,
        }
    }

    /// The refusal, when the URL itself was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            FetchError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<Refusal> for FetchError {
    fn from(r: Refusal) -> Self {
        FetchError::Refused(r)
    }
}
