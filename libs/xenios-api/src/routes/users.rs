//! A user's data, as a whole: erased on request (an account closed, a right to erasure).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::User;
use crate::error::{ApiError, ApiPath, ErrorBody};
use crate::operations::{erase_user, Erased};
use crate::rate_limit::RouteGroup;
use crate::state::AppState;

/// Erase everything the service holds of a user: jobs with their inputs, results and events,
/// commands still queued, dead letters, uploaded files, cached extractions of their documents, and LLM audit rows.
/// Queued jobs are cancelled first; running jobs are told to stop and answered `202` with
/// `complete: false`: call again once they have stopped. A user may erase their own data,
/// `service_role` anyone's.
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/data", tag = "users",
    security(("api_key" = [], "bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = Erased, description = "nothing of the user is left"),
               (status = 202, body = Erased, description = "jobs still running were told to stop: call again"),
               (status = 403, body = ErrorBody, description = "another user's data"),
               (status = 503, body = ErrorBody)))]
pub async fn erase_user_data(
    State(state): State<AppState>,
    user: User,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(RouteGroup::Jobs, &user.caller.subject())?;
    if user_id != user.user.user_id && !user.user.is_service_role() {
        return Err(ApiError::Forbidden(
            "only service_role may erase another user's data".into(),
        ));
    }
    let events_max_age = Duration::from_secs(state.settings.nats.events_max_age_secs);
    let erased = erase_user(
        &state.store,
        &state.nats,
        &state.jetstream,
        Some(&state.hub),
        &user_id,
        events_max_age,
    )
    .await?;
    tracing::info!(user_id, ?erased, "user data erased");
    let status = match erased.complete {
        true => StatusCode::OK,
        false => StatusCode::ACCEPTED,
    };
    Ok((status, axum::Json(erased)).into_response())
}
