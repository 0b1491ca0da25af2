//! Fetching `url` job inputs without letting them reach inside the network (SPEC §3 "Files").
//!
//! A URL may be fetched only over http(s), without credentials, from hosts whose every
//! address is public unicast: no loopback, private, link-local, CGNAT, multicast,
//! broadcast, unspecified, documentation, benchmarking or reserved ranges, no cloud
//! metadata address or name, and no IPv6 form that leads to one of these (mapped, NAT64,
//! 6to4, unique local, link-local). Hosts in `XENIOS_FETCH_ALLOW_HOSTS` are exempt, each
//! on its own: a redirect away from one is judged afresh.
//!
//! * [`check_url`] is the check at submission (the API's `400 invalid_input`).
//! * [`Fetcher::fetch`] checks again on every redirect and at connect time, through a DNS
//!   resolver that refuses what the check refuses, so there is no window between check and
//!   connection for a changed DNS answer. It reads at most `max_bytes` and gives up after
//!   `timeout` for the whole download.
//!
//! Errors carry a stable [`FetchError::code`] (`url_refused`, `too_large`, `timeout`,
//! `fetch_failed`) and [`FetchError::retryable`].

mod address;
mod error;
mod fetcher;
mod policy;

pub use address::forbidden_range;
pub use error::{FetchError, Refusal};
pub use fetcher::{Fetched, Fetcher};
pub use policy::{check_url, check_url_syntax, FetchPolicy};
pub use reqwest::Url;
