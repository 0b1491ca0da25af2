//! When to try again: exponential backoff with jitter, and the provider's `Retry-After`.
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use xenios_config::LlmRetrySettings;

/// The wait before retry number `retry` (0 = the first retry): doubling from
/// `initial_backoff_ms` up to `max_backoff_ms`, the upper half random so that many callers
/// hitting one rate limit spread out, the lower half fixed so none retries at once.
pub(crate) fn backoff(settings: &LlmRetrySettings, retry: u32) -> Duration {
    let ceiling = settings
        .initial_backoff_ms
        .saturating_mul(1u64 << retry.min(32))
        .min(settings.max_backoff_ms);
    let floor = ceiling / 2;
    Duration::from_millis(rand::thread_rng().gen_range(floor..=ceiling))
}

/// `Retry-After` as delta-seconds or an HTTP date (a date in the past means now).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Not RFC 9110, but some gateways send fractions.
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let s = LlmRetrySettings {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            max_retry_after_ms: 0,
        };
        for _ in 0..50 {
            let first = backoff(&s, 0).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = backoff(&s, 2).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = backoff(&s, 40).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let parse = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_static(v));
            retry_after(&h, now)
        };
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("-3"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
