//! `GET /api/v1/llm/usage`: what a user's LLM calls consumed and cost over a time window,
//! summed from the audit log (`inference_logs`), so the web app can show it or bill it.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use xenios_store::{UsageCounts, UsageQuery};

use crate::auth::User;
use crate::budget::{self, DailyBudget};
use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::routes::jobs::given;
use crate::state::AppState;

/// The window when `since` is not given.
const DEFAULT_WINDOW_DAYS: i64 = 30;
/// The longest window one request may sum.
const MAX_WINDOW_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// RFC 3339; default: 30 days before `until`.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// RFC 3339, exclusive; default: now. At most 366 days after `since`.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Whose calls: the caller's own by default. Another user's only for `service_role`,
    /// whose default is every call (service calls without a user included).
    user_id: Option<String>,
}

/// Provider calls summed.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotals {
    /// LLM requests (jobs) the calls served.
    requests: i64,
    /// Every call to a provider: retries, fallbacks and JSON-schema re-asks included.
    calls: i64,
    failed_calls: i64,
    /// Every input token billed; the cache counts are parts of it.
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    /// Estimated (price table) or reported by the provider; calls of unknown price add 0.
    cost_usd: f64,
}

impl From<UsageCounts> for UsageTotals {
    fn from(c: UsageCounts) -> Self {
        UsageTotals {
            requests: c.requests,
            calls: c.calls,
            failed_calls: c.failed_calls,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cache_read_tokens: c.cache_read_tokens,
            cache_write_tokens: c.cache_write_tokens,
            cost_usd: c.cost_usd,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUsageView {
    task: String,
    /// As the routing table names it.
    model: String,
    #[serde(flatten)]
    totals: UsageTotals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserUsageView {
    /// `null`: calls made without a user (service calls).
    user_id: Option<String>,
    #[serde(flatten)]
    totals: UsageTotals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LlmUsageView {
    /// `null`: every caller's (a `service_role` request without `user_id`).
    user_id: Option<String>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    total: UsageTotals,
    /// Per task and model, costliest first.
    by_model: Vec<ModelUsageView>,
    /// Every user's report only: per user, costliest first, at most 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    by_user: Option<Vec<UserUsageView>>,
    /// The user's spending today against their limit (the caller's own token's
    /// `app_metadata.llm_daily_budget_usd`, else `llm.user_daily_budget_usd`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    daily_budget: Option<DailyBudget>,
}

fn time_param(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    given(value)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid_field(field, "an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
                })
        })
        .transpose()
}

/// Tokens, calls and cost of the caller's LLM requests over a window (every caller's, or one
/// user's, for `service_role`), in all and per task and model.
#[utoipa::path(get, path = "/api/v1/llm/usage", tag = "llm",
    security(("api_key" = [], "bearer" = [])),
    params(UsageParams),
    responses((status = 200, body = LlmUsageView), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
               (status = 403, body = ErrorBody, description = "another user's usage")))]
pub async fn usage(
    State(state): State<AppState>,
    user: User,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<axum::Json<LlmUsageView>, ApiError> {
    let until = time_param("until", &params.until)?.unwrap_or_else(Utc::now);
    let since =
        time_param("since", &params.since)?.unwrap_or(until - Duration::days(DEFAULT_WINDOW_DAYS));
    if since >= until {
        return Err(ApiError::invalid_field("since", "must be before `until`"));
    }
    if until - since > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid_field(
            "since",
            format!("the window is at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    let own = &user.user.user_id;
    let user_id = match (given(&params.user_id), user.user.is_service_role()) {
        (Some(other), false) if other != own => {
            return Err(ApiError::Forbidden(
                "only service_role may see another user's usage".into(),
            ))
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, true) => None,
        (None, false) => Some(own.clone()),
    };
    let report = state
        .store
        .llm_usage(&UsageQuery {
            user_id: user_id.clone(),
            since,
            until,
        })
        .await?;
    let daily_budget = match &user_id {
        Some(id) => {
            // Only the caller's own token says what their plan allows.
            let own = user
                .user
                .llm_daily_budget_usd
                .filter(|_| *id == user.user.user_id);
            budget::today(&state, id, budget::limit_of(&state, own)).await?
        }
        None => None,
    };
    let by_user = user_id.is_none().then(|| {
        report
            .by_user
            .into_iter()
            .map(|u| UserUsageView {
                user_id: u.user_id,
                totals: u.counts.into(),
            })
            .collect()
    });
    Ok(axum::Json(LlmUsageView {
        by_user,
        daily_budget,
        user_id,
        since,
        until,
        total: report.total.into(),
        by_model: report
            .by_model
            .into_iter()
            .map(|m| ModelUsageView {
                task: m.task,
                model: m.model,
                totals: m.counts.into(),
            })
            .collect(),
    }))
}
