//! Who is calling: the API key (required on every `/api/v1/*` route) and, when a bearer token
//! is sent, the Supabase user. Verified once per request by [`layer`]; handlers take the
//! [`Caller`] or [`User`] extractors.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use xenios_auth::{ApiKeyId, AuthError, UserContext};

use crate::error::ApiError;
use crate::rate_limit::RouteGroup;
use crate::state::AppState;

pub const API_KEY_HEADER: &str = "x-api-key";

/// The authenticated caller of an `/api/v1/*` request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyId,
    pub user: Option<UserContext>,
}

impl Caller {
    /// The name rate limits and audit use: the user when there is one, else the key.
    pub fn subject(&self) -> String {
        match &self.user {
            Some(user) => format!("user:{}", user.user_id),
            None => format!("key:{}", self.key),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::JwksUnavailable(_) => {
                ApiError::unavailable("token keys cannot be fetched right now")
            }
            AuthError::Config(cause) => ApiError::internal(cause),
            other => ApiError::Unauthorized(other.public_message().to_string()),
        }
    }
}

/// Checks the API key and the bearer token (if any), and the per-key and per-user rate
/// limits.
pub async fn layer(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = req
        .headers()
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    let key = state.auth.check_api_key(key)?;
    state.limits.check(RouteGroup::PerKey, &key.to_string())?;
    let user = match req.headers().get(AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
            Some(state.auth.verify_bearer(Some(value)).await?)
        }
        None => None,
    };
    if let Some(user) = &user {
        tracing::Span::current().record("user_id", user.user_id.as_str());
        state.limits.check(RouteGroup::PerUser, &user.user_id)?;
    }
    req.extensions_mut().insert(Caller { key, user });
    Ok(next.run(req).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("missing API key".into()))
    }
}

/// A caller with a verified user token; user routes take this.
#[derive(Debug, Clone)]
pub struct User {
    pub caller: Caller,
    pub user: UserContext,
}

impl User {
    pub fn can_see(&self, owner: Option<&str>) -> bool {
        self.user.is_service_role() || owner == Some(self.user.user_id.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let user = caller.user.clone().ok_or_else(|| {
            ApiError::Unauthorized("this route needs `Authorization: Bearer <token>`".into())
        })?;
        Ok(User { caller, user })
    }
}
