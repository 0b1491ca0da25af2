//! The per-user daily LLM spending limit (`llm.user_daily_budget_usd`): what a user's calls
//! cost since midnight UTC, from the audit log, checked before each of their LLM requests.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use xenios_auth::UserContext;
use xenios_store::UsageQuery;

use crate::error::ApiError;
use crate::state::AppState;

/// A user's day of spending, as `/api/v1/llm/usage` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyBudget {
    /// The token's `app_metadata.llm_daily_budget_usd`, else `llm.user_daily_budget_usd`.
    pub limit_usd: f64,
    /// What the user's calls have cost since midnight UTC.
    pub spent_usd: f64,
    /// When the day's spending starts again from 0 (midnight UTC).
    pub resets_at: DateTime<Utc>,
}

/// The UTC day `now` falls in: its start, and the next day's.
pub(crate) fn day_of(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    (start, start + Duration::days(1))
}

/// A user's daily limit: their token's own (a plan's; 0 allows nothing), else the server's
/// (`llm.user_daily_budget_usd`, where 0 means no limit).
pub fn limit_of(state: &AppState, own: Option<f64>) -> Option<f64> {
    own.or(Some(state.settings.llm.user_daily_budget_usd).filter(|usd| *usd > 0.0))
}

/// `user_id`'s day so far against `limit_usd`, if there is a limit.
pub async fn today(
    state: &AppState,
    user_id: &str,
    limit_usd: Option<f64>,
) -> Result<Option<DailyBudget>, ApiError> {
    let Some(limit_usd) = limit_usd else {
        return Ok(None);
    };
    let now = Utc::now();
    let (since, resets_at) = day_of(now);
    let spent = state
        .store
        .llm_usage_total(&UsageQuery {
            user_id: Some(user_id.to_owned()),
            since,
            until: resets_at,
        })
        .await?;
    Ok(Some(DailyBudget {
        limit_usd,
        spent_usd: spent.cost_usd,
        resets_at,
    }))
}

/// Refuses an LLM request of a user whose day's budget is spent. Calls without a user and
/// `service_role` callers act for the platform and are not limited.
pub async fn check(state: &AppState, user: Option<&UserContext>) -> Result<(), ApiError> {
    let Some(user) = user.filter(|u| !u.is_service_role()) else {
        return Ok(());
    };
    let limit = limit_of(state, user.llm_daily_budget_usd);
    if limit == Some(0.0) {
        // Nothing to wait for: no day renews a budget of 0.
        return Err(ApiError::Forbidden(
            "this user's plan allows no LLM requests (app_metadata.llm_daily_budget_usd is 0)"
                .into(),
        ));
    }
    let Some(day) = today(state, &user.user_id, limit).await? else {
        return Ok(());
    };
    if day.spent_usd < day.limit_usd {
        return Ok(());
    }
    let wait = (day.resets_at - Utc::now()).to_std().unwrap_or_default();
    Err(ApiError::LimitReached {
        message: format!(
            "the daily LLM budget of ${:.2} is spent (${:.2}); it renews at {} UTC",
            day.limit_usd,
            day.spent_usd,
            day.resets_at.format("%Y-%m-%d %H:%M")
        ),
        retry_after: wait.max(std::time::Duration::from_secs(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_runs_from_midnight_to_midnight_utc() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            day_of(t("2026-12-06T23:59:59.9Z")),
            (t("2026-12-06T00:00:00Z"), t("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            day_of(t("2026-12-31T00:00:00Z")).1,
            t("2027-01-01T00:00:00Z")
        );
    }
}
