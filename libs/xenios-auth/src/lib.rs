//! Who is calling the Xenios API.
//!
//! * API keys (`X-API-Key`): several may be configured for rotation; a presented key is compared
//!   in constant time against every one, and the match is named by a non-secret [`ApiKeyId`].
//! * Supabase user tokens (`Authorization: Bearer …`): HS256 with the project's JWT secret,
//!   ES256/RS256 with keys from the project's JWKS (cached; refetched on an unknown `kid`, at
//!   most once per interval and one fetch at a time). `exp` and `aud` are required, `nbf` is
//!   honoured, `alg: none` and algorithm confusion are refused.
//!
//! Framework-free: the HTTP layer hands in header values and maps [`AuthError`] to answers.

mod api_key;
mod error;
mod jwks;
mod token;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use secrecy::{ExposeSecret, SecretString};

pub use api_key::ApiKeyId;
pub use error::AuthError;
pub use token::{mint_hs256, UserContext};

use api_key::ApiKeys;
use jwks::Jwks;
use token::TokenVerifier;

/// What [`Authenticator::new`] needs; `Default` gives the documented defaults and no credentials.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Accepted API keys (several during a rotation); empty accepts no key.
    pub api_keys: Vec<SecretString>,
    /// `SUPABASE_JWT_SECRET`: enables HS256 tokens.
    pub jwt_secret: Option<SecretString>,
    /// `SUPABASE_URL` + `/auth/v1/.well-known/jwks.json`: enables ES256/RS256 tokens.
    pub jwks_url: Option<String>,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds).
    pub leeway: Duration,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_cache_ttl: Duration,
    /// Minimum time between two JWKS fetches, however many unknown `kid`s arrive.
    pub jwks_min_refetch_interval: Duration,
    /// Timeout of one JWKS fetch.
    pub http_timeout: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            jwt_secret: None,
            jwks_url: None,
            audience: "authenticated".into(),
            leeway: Duration::from_secs(30),
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_min_refetch_interval: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// Checks API keys and bearer tokens. Cheap to clone; clones share the JWKS cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    api_keys: ApiKeys,
    tokens: TokenVerifier,
}

impl Authenticator {
    /// Fails on settings that could only ever refuse or misjudge callers: an empty API key or
    /// secret, an empty audience, a JWKS URL that is not http(s).
    pub fn new(settings: AuthSettings) -> Result<Self, AuthError> {
        let api_keys = ApiKeys::new(&settings.api_keys)?;
        let hs256 = match &settings.jwt_secret {
            Some(secret) if secret.expose_secret().is_empty() => {
                return Err(AuthError::Config("the JWT secret is empty".into()))
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.expose_secret().as_bytes())),
            None => None,
        };
        if settings.audience.trim().is_empty() {
            return Err(AuthError::Config("the token audience is empty".into()));
        }
        let jwks = settings
            .jwks_url
            .map(|url| {
                Jwks::new(
                    url,
                    settings.http_timeout,
                    settings.jwks_cache_ttl,
                    settings.jwks_min_refetch_interval,
                )
            })
            .transpose()?;
        let validation = TokenVerifier::validation(&settings.audience, settings.leeway);
        Ok(Self {
            inner: Arc::new(Inner {
                api_keys,
                tokens: TokenVerifier {
                    hs256,
                    jwks,
                    validation,
                },
            }),
        })
    }

    /// Checks the `X-API-Key` value; `None` or empty is [`AuthError::MissingApiKey`].
    pub fn check_api_key(&self, presented: Option<&str>) -> Result<ApiKeyId, AuthError> {
        self.inner.api_keys.check(presented)
    }

    /// Verifies an `Authorization` header value of the form `Bearer <jwt>`.
    pub async fn verify_bearer(
        &self,
        authorization: Option<&str>,
    ) -> Result<UserContext, AuthError> {
        self.inner.tokens.verify(authorization).await
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = &self.inner.tokens;
        f.debug_struct("Authenticator")
            .field("api_keys", &self.inner.api_keys.len())
            .field("hs256", &tokens.hs256.is_some())
            .field("jwks_url", &tokens.jwks.as_ref().map(Jwks::url))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn authenticator_is_shareable() {
        assert_send_sync_clone::<Authenticator>();
    }

    #[test]
    fn verification_can_run_on_any_worker_thread() {
        fn assert_send<T: Send>(_: T) {}
        let auth = Authenticator::new(AuthSettings::default()).unwrap();
        assert_send(auth.verify_bearer(None));
    }

    #[test]
    fn bad_settings_are_refused() {
        let refuse = |s: AuthSettings| matches!(Authenticator::new(s), Err(AuthError::Config(_)));
        assert!(refuse(AuthSettings {
            jwt_secret: Some("".into()),
            ..Default::default()
        }));
        assert!(refuse(AuthSettings {
            audience: " ".into(),
            ..Default::default()
        }));
        assert!(refuse(AuthSettings {
            jwks_url: Some("ftp://example.com/jwks".into()),
            ..Default::default()
        }));
        assert!(refuse(AuthSettings {
            jwks_url: Some("not a url".into()),
            ..Default::default()
        }));
        assert!(Authenticator::new(AuthSettings::default()).is_ok());
    }

    #[test]
    fn debug_shows_no_secrets() {
        let auth = Authenticator::new(AuthSettings {
            api_keys: vec!["key-material".into()],
            jwt_secret: Some("secret-material".into()),
            ..Default::default()
        })
        .unwrap();
        let shown = format!("{auth:?}");
        assert!(!shown.contains("material"), "{shown}");
    }

    #[test]
    fn public_messages_carry_no_details() {
        let e = AuthError::JwksUnavailable("GET http://10.0.0.1/jwks failed".into());
        assert!(!e.public_message().contains("10.0.0.1"));
        let e = AuthError::Config("secret xyz".into());
        assert!(!e.public_message().contains("xyz"));
    }
}
