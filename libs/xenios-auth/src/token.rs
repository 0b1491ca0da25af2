//! Supabase access tokens: parsing `Authorization: Bearer …`, choosing the one key and algorithm
//! a token may be verified with, and the claims checks.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::jwks::Jwks;
use crate::AuthError;

/// Supabase tokens are well under 2 KB; anything past this is refused before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

const SERVICE_ROLE: &str = "service_role";

/// The verified user behind a request.
#[derive(Debug, Clone, PartialEq)]
pub struct UserContext {
    /// The token's `sub`: the Supabase user id.
    pub user_id: String,
    pub role: String,
    pub email: Option<String>,
    /// `app_metadata.llm_daily_budget_usd`: this user's daily LLM spending limit in place of
    /// the server's (a plan's), 0 for none at all. `app_metadata` is set by the platform,
    /// never by the user (unlike `user_metadata`).
    pub llm_daily_budget_usd: Option<f64>,
}

impl UserContext {
    /// `service_role` callers act for the platform and may see every user's data.
    pub fn is_service_role(&self) -> bool {
        self.role == SERVICE_ROLE
    }
}

pub(crate) struct TokenVerifier {
    pub(crate) hs256: Option<DecodingKey>,
    pub(crate) jwks: Option<Jwks>,
    pub(crate) validation: Validation,
}

impl TokenVerifier {
    pub(crate) fn validation(audience: &str, leeway: Duration) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        // Without `aud` in the list a token lacking the claim would pass the audience check.
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation
    }

    pub(crate) async fn verify(
        &self,
        authorization: Option<&str>,
    ) -> Result<UserContext, AuthError> {
        let token = bearer_token(authorization)?;
        let header = parse_header(token)?;
        let fetched;
        // The header's `alg` only picks the path; the key on that path fixes the one algorithm
        // accepted, so an HS256 token can never be checked against a JWKS public key.
        let (alg, key) = match header.alg.as_str() {
            "HS256" => (
                Algorithm::HS256,
                self.hs256.as_ref().ok_or_else(not_allowed)?,
            ),
            "ES256" | "RS256" => {
                let jwks = self.jwks.as_ref().ok_or_else(not_allowed)?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::invalid("missing key id"))?;
                fetched = jwks.key(kid).await?;
                (fetched.alg, &fetched.key)
            }
            _ => return Err(not_allowed()),
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(rejection)?
            .claims;
        let user_id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::invalid("missing sub claim"))?;
        let role = claims
            .role
            .filter(|r| !r.is_empty())
            .ok_or_else(|| AuthError::invalid("missing role claim"))?;
        // Read leniently: a malformed value is no override, never a refused token.
        let llm_daily_budget_usd = claims
            .app_metadata
            .as_ref()
            .and_then(|m| m.get("llm_daily_budget_usd"))
            .and_then(serde_json::Value::as_f64)
            .filter(|usd| usd.is_finite() && *usd >= 0.0);
        Ok(UserContext {
            user_id,
            role,
            email: claims.email.filter(|e| !e.is_empty()),
            llm_daily_budget_usd,
        })
    }
}

/// Claims are optional here so that a token with odd claims still gets the precise verdict
/// (expired, wrong audience…) from validation rather than a generic decoding error.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    role: Option<String>,
    email: Option<String>,
    app_metadata: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

fn not_allowed() -> AuthError {
    AuthError::invalid("algorithm not allowed")
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(AuthError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedToken);
    }
    let token = token.trim_start();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::invalid("too large"));
    }
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::MalformedToken);
    }
    Ok(token)
}

/// Our own header parse: `jsonwebtoken` cannot represent `alg: none` and would report it as
/// a decoding error, where the caller deserves "algorithm not allowed".
fn parse_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedToken);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)
}

fn rejection(e: JwtError) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::invalid("expired"),
        ErrorKind::ImmatureSignature => AuthError::invalid("not yet valid"),
        ErrorKind::InvalidAudience => AuthError::invalid("wrong audience"),
        ErrorKind::InvalidIssuer => AuthError::invalid("wrong issuer"),
        ErrorKind::InvalidSubject => AuthError::invalid("wrong subject"),
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => AuthError::invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => not_allowed(),
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::InvalidToken(format!("missing {claim} claim"))
        }
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::invalid("unusable key")
        }
        _ => AuthError::MalformedToken,
    }
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Mints an HS256 token shaped like Supabase's (`sub`, `role`, `email`, `aud`, `iat`, `exp`), for
/// `xenios token`, `xenios dev` and tests.
pub fn mint_hs256(
    secret: &str,
    user_id: &str,
    role: &str,
    email: Option<&str>,
    audience: &str,
    ttl: Duration,
) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::Config("the JWT secret is empty".into()));
    }
    if user_id.is_empty() || role.is_empty() {
        return Err(AuthError::Config(
            "a token needs a user id and a role".into(),
        ));
    }
    let iat = jsonwebtoken::get_current_timestamp();
    let claims = MintedClaims {
        sub: user_id,
        role,
        email,
        aud: audience,
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Config(format!("cannot sign a token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert!(matches!(bearer_token(None), Err(AuthError::MissingToken)));
        assert!(matches!(
            bearer_token(Some("  ")),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token(Some("Bearer")),
            Err(AuthError::MalformedToken)
        ));
        assert!(matches!(
            bearer_token(Some("Bearer  ")),
            Err(AuthError::MalformedToken)
        ));
        assert!(matches!(
            bearer_token(Some("Basic abc")),
            Err(AuthError::MalformedToken)
        ));
        assert!(matches!(
            bearer_token(Some("Bearer a b")),
            Err(AuthError::MalformedToken)
        ));
        assert_eq!(bearer_token(Some("Bearer a.b.c")).unwrap(), "a.b.c");
        assert_eq!(bearer_token(Some("bearer   a.b.c ")).unwrap(), "a.b.c");
    }

    #[test]
    fn header_needs_three_parts_and_json() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k"}"#);
        let parsed = parse_header(&format!("{h}.e30.sig")).unwrap();
        assert_eq!(
            (parsed.alg.as_str(), parsed.kid.as_deref()),
            ("ES256", Some("k"))
        );
        for bad in [
            format!("{h}.e30"),
            format!("{h}.e30.sig.more"),
            "!!.e30.sig".to_string(),
            format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(b"[1]")),
        ] {
            assert!(
                matches!(parse_header(&bad), Err(AuthError::MalformedToken)),
                "{bad}"
            );
        }
    }
}
