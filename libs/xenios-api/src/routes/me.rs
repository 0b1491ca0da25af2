use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::User;

#[derive(Serialize, ToSchema)]
pub struct Me {
    user_id: String,
    role: String,
    email: Option<String>,
    /// True for `service_role`, which sees every user's jobs.
    service_role: bool,
}

/// The user the bearer token names, as the service understands it.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    security(("api_key" = [], "bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(user: User) -> Json<Me> {
    Json(Me {
        service_role: user.user.is_service_role(),
        user_id: user.user.user_id,
        role: user.user.role,
        email: user.user.email,
    })
}
