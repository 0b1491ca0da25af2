/// Why a caller was not authenticated, or why authentication could not be set up.
///
/// `Display` is for logs (it may name the JWKS URL or an I/O cause); answers to clients use
/// [`AuthError::public_message`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed bearer token")]
    MalformedToken,
    /// The reason is one of a fixed set of short phrases ("expired", "bad signature", …); it never
    /// carries token contents.
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("token signing keys unavailable: {0}")]
    JwksUnavailable(String),
    #[error("authentication configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// A message safe for a `401` body: no secrets, no token contents, no internal addresses.
    pub fn public_message(&self) -> String {
        match self {
            AuthError::MissingApiKey => "missing API key (X-API-Key)".into(),
            AuthError::InvalidApiKey => "invalid API key".into(),
            AuthError::MissingToken => {
                "missing bearer token (Authorization: Bearer <token>)".into()
            }
            AuthError::MalformedToken => "malformed bearer token".into(),
            AuthError::InvalidToken(reason) => format!("invalid bearer token: {reason}"),
            AuthError::JwksUnavailable(_) => "token signing keys are unavailable".into(),
            AuthError::Config(_) => "authentication is not configured correctly".into(),
        }
    }

    pub(crate) fn invalid(reason: &str) -> Self {
        AuthError::InvalidToken(reason.to_owned())
    }
}
