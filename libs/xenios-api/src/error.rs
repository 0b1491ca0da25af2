//! The one error body of `/api/v1/*`: `{"error":{"code","message","details","request_id"}}`.
//! Every failure — ours, the extractors', the router's — is turned into it here.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::correlation;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    InvalidInput {
        status: StatusCode,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// A limit of the user's own is reached (the day's LLM spending, open event streams):
    /// `rate_limited` too, with a message that names it.
    #[error("{message}")]
    LimitReached {
        message: String,
        retry_after: Duration,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidInput {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::InvalidInput {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            details: Some(serde_json::json!([{ "field": field, "message": message }])),
            message: format!("{field}: {message}"),
        }
    }

    /// The error with the fields it names renamed, in its details and at the head of its
    /// message: for a route whose body names a field otherwise than the check that refused it.
    pub fn renaming_fields(self, rename: impl Fn(&str) -> String) -> Self {
        let ApiError::InvalidInput {
            status,
            mut message,
            details: Some(mut details),
        } = self
        else {
            return self;
        };
        for (n, detail) in details.as_array_mut().into_iter().flatten().enumerate() {
            let Some(field) = detail["field"].as_str().map(str::to_owned) else {
                continue;
            };
            let renamed = rename(&field);
            if n == 0 {
                if let Some(rest) = message.strip_prefix(&format!("{field}:")) {
                    message = format!("{renamed}:{rest}");
                }
            }
            detail["field"] = renamed.into();
        }
        ApiError::InvalidInput {
            status,
            message,
            details: Some(details),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable {
            message: message.into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidInput { status, .. } => *status,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } | ApiError::LimitReached { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidInput { .. } => "invalid_input",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } | ApiError::LimitReached { .. } => "rate_limited",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::LimitReached { retry_after, .. } => {
                Some(*retry_after)
            }
            ApiError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The error body, as documented in the OpenAPI description.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of unauthorized, forbidden, not_found, invalid_input, payload_too_large,
    /// unsupported_media_type, conflict, rate_limited, unavailable, internal.
    pub code: &'static str,
    pub message: String,
    /// Field-level problems for invalid_input; null otherwise.
    pub details: Option<Value>,
    /// The request's correlation id (also in the `X-Correlation-ID` header).
    pub request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        } else if status.is_server_error() {
            tracing::warn!(error = %self, "request refused");
        }
        let details = match &self {
            ApiError::InvalidInput { details, .. } => details.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                details,
                request_id: correlation::current(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::InvalidInput {
                status,
                details: Some(match field_named_in(&message) {
                    Some(field) => serde_json::json!([{ "field": field, "message": message }]),
                    None => serde_json::json!([{ "message": message }]),
                }),
                message,
            },
            _ => ApiError::InvalidInput {
                status: StatusCode::BAD_REQUEST,
                message,
                details: None,
            },
        }
    }
}

/// The body field a JSON data error is about, when serde names it: a missing or unknown one.
fn field_named_in(message: &str) -> Option<String> {
    ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.split_once(prefix))
        .and_then(|(_, rest)| rest.split('`').next())
        .map(str::to_owned)
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::NotFound(rejection.body_text())
    }
}

impl From<crate::operations::OperationError> for ApiError {
    fn from(e: crate::operations::OperationError) -> Self {
        match e {
            crate::operations::OperationError::Store(e) => e.into(),
            broker => ApiError::unavailable(broker.to_string()),
        }
    }
}

impl From<xenios_store::StoreError> for ApiError {
    fn from(e: xenios_store::StoreError) -> Self {
        match e {
            xenios_store::StoreError::Unavailable(_) => {
                ApiError::unavailable("the database is unavailable")
            }
            other => ApiError::internal(other),
        }
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

pub async fn route_not_found(uri: axum::http::Uri) -> Response {
    in_shape_of(&uri, ApiError::NotFound("no such route".into()))
}

pub async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    let mut response = in_shape_of(
        &uri,
        ApiError::InvalidInput {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "method not allowed on this route".into(),
            details: None,
        },
    );
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Under `/v1/` errors have OpenAI's shape, which the SDKs parse (an SDK's `models.list()`
/// meets the fallback, for one).
fn in_shape_of(uri: &axum::http::Uri, error: ApiError) -> Response {
    if uri.path().starts_with("/v1/") {
        crate::routes::openai::OpenAiError(error).into_response()
    } else {
        error.into_response()
    }
}

/// Answers `503` for a request still unanswered after `limit` (its body still arriving, or the
/// store or broker too slow), dropping its work: a client waits a bounded time, and a slow
/// client holds no task beyond it.
pub async fn within_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable {
            message: format!("the request took longer than {} s", limit.as_secs()),
            retry_after: Some(Duration::from_secs(1)),
        }
        .into_response(),
    }
}
