//! Token buckets per caller and route group (SPEC §3 "Rate limits").

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use xenios_config::{Bucket, RateLimitSettings};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGroup {
    /// Everything one API key does.
    PerKey,
    /// Everything one user does.
    PerUser,
    Jobs,
    Llm,
}

#[derive(Clone)]
pub struct RateLimits {
    inner: Option<Arc<Limiters>>,
}

struct Limiters {
    per_key: DefaultKeyedRateLimiter<String>,
    per_user: DefaultKeyedRateLimiter<String>,
    jobs: DefaultKeyedRateLimiter<String>,
    llm: DefaultKeyedRateLimiter<String>,
}

fn limiter(bucket: Bucket) -> DefaultKeyedRateLimiter<String> {
    let rate = NonZeroU32::new(bucket.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(bucket.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let inner = settings.enabled.then(|| {
            Arc::new(Limiters {
                per_key: limiter(settings.per_key),
                per_user: limiter(settings.per_user),
                jobs: limiter(settings.jobs),
                llm: limiter(settings.llm),
            })
        });
        RateLimits { inner }
    }

    pub fn check(&self, group: RouteGroup, subject: &str) -> Result<(), ApiError> {
        let Some(limits) = &self.inner else {
            return Ok(());
        };
        let limiter = match group {
            RouteGroup::PerKey => &limits.per_key,
            RouteGroup::PerUser => &limits.per_user,
            RouteGroup::Jobs => &limits.jobs,
            RouteGroup::Llm => &limits.llm,
        };
        limiter.check_key(&subject.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            }
        })
    }

    /// Forgets callers whose buckets are full again, so memory stays bounded by recent callers.
    pub fn prune(&self) {
        if let Some(limits) = &self.inner {
            limits.per_key.retain_recent();
            limits.per_user.retain_recent();
            limits.jobs.retain_recent();
            limits.llm.retain_recent();
        }
    }
}
