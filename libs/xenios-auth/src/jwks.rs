//! The JWKS of the Supabase project: fetched on first use, cached, refreshed when stale or when
//! a token names an unknown `kid` — one fetch at a time and at most one per
//! `min_refetch` interval, so a stream of forged `kid`s cannot hammer the endpoint.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::AuthError;

/// A JWKS larger than this is not a key set; refusing it bounds memory per fetch.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A public key together with the one algorithm it may verify, decided by its key type when the
/// set was fetched.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    fetched_at: Instant,
}

struct Shared {
    url: String,
    client: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
}

pub(crate) struct Jwks {
    shared: Arc<Shared>,
    ttl: Duration,
    min_refetch: Duration,
    /// Held for the whole of a fetch; holds when the last fetch started.
    fetching: Arc<Mutex<Option<Instant>>>,
}

impl Jwks {
    pub(crate) fn new(
        url: String,
        http_timeout: Duration,
        ttl: Duration,
        min_refetch: Duration,
    ) -> Result<Self, AuthError> {
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| AuthError::Config(format!("JWKS URL {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AuthError::Config(format!(
                "JWKS URL {url:?} must be http or https"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(http_timeout)
            .connect_timeout(http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("xenios-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::Config(format!("JWKS HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                url,
                client,
                current: RwLock::new(None),
            }),
            ttl,
            min_refetch,
            fetching: Arc::new(Mutex::new(None)),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.shared.url
    }

    /// The key named `kid`, fetching the set if it is missing or lacks that key. A key of a
    /// stale set is used at once while the set is fetched again beside the request: a request
    /// waits on the endpoint only for a key it has never seen.
    pub(crate) async fn key(&self, kid: &str) -> Result<VerifyingKey, AuthError> {
        if let Some(set) = self.shared.snapshot() {
            if let Some(key) = set.keys.get(kid) {
                if set.fetched_at.elapsed() >= self.ttl {
                    self.refresh_in_background();
                }
                return Ok(key.clone());
            }
        }
        let mut last_fetch = self.fetching.clone().lock_owned().await;
        // Whoever held the lock before us may just have fetched what we need.
        if let Some(key) = self.fresh_key(kid) {
            return Ok(key);
        }
        let current = self.shared.snapshot();
        let due = last_fetch.is_none_or(|at| at.elapsed() >= self.min_refetch);
        if !due {
            return match current.as_ref().and_then(|set| set.keys.get(kid)) {
                Some(key) => Ok(key.clone()),
                None if current.is_some() => Err(AuthError::invalid("unknown key")),
                None => Err(AuthError::JwksUnavailable(
                    "the last fetch failed; retrying later".into(),
                )),
            };
        }
        *last_fetch = Some(Instant::now());
        // The fetch runs as its own task holding the lock, so a caller that goes away mid-fetch
        // neither aborts it nor lets a second fetch start before the first one is stored.
        let shared = self.shared.clone();
        let fetched = tokio::spawn(async move {
            let _held = last_fetch;
            shared.refresh().await
        })
        .await
        .map_err(|e| AuthError::JwksUnavailable(format!("fetch task ended: {e}")))?;
        match fetched {
            Ok(set) => set
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| AuthError::invalid("unknown key")),
            // A key we already trusted stays usable while the endpoint is down: an outage of
            // the identity provider should not log everyone out.
            Err(reason) => current
                .as_ref()
                .and_then(|set| set.keys.get(kid).cloned())
                .ok_or(AuthError::JwksUnavailable(reason)),
        }
    }

    /// Starts a fetch of the set unless one is under way or the last began within
    /// `min_refetch`.
    fn refresh_in_background(&self) {
        let Ok(mut last_fetch) = self.fetching.clone().try_lock_owned() else {
            return;
        };
        if last_fetch.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return;
        }
        *last_fetch = Some(Instant::now());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _held = last_fetch;
            let _ = shared.refresh().await;
        });
    }

    fn fresh_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.shared
            .snapshot()
            .filter(|set| set.fetched_at.elapsed() < self.ttl)
            .and_then(|set| set.keys.get(kid).cloned())
    }
}

impl Shared {
    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetches the set and, if that worked, makes it the current one.
    async fn refresh(&self) -> Result<Arc<KeySet>, String> {
        let result = self.download().await;
        match &result {
            Ok(set) => {
                tracing::info!(url = %self.url, keys = set.keys.len(), "JWKS fetched");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(set.clone());
            }
            Err(reason) => tracing::warn!(url = %self.url, %reason, "JWKS fetch failed"),
        }
        result
    }

    async fn download(&self) -> Result<Arc<KeySet>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {} answered {status}", self.url));
        }
        let too_large = || format!("GET {} answered more than {MAX_JWKS_BYTES} bytes", self.url);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_key_set(&body).map_err(|e| format!("GET {}: {e}", self.url))?;
        Ok(Arc::new(KeySet {
            keys,
            fetched_at: Instant::now(),
        }))
    }
}

/// Keeps the usable keys of a JWKS and skips the rest, so one odd entry (an encryption key, a
/// curve we do not take) does not make the whole set unusable.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for entry in raw.keys {
        match verifying_key(entry) {
            Ok((kid, key)) => {
                keys.entry(kid).or_insert(key);
            }
            Err(why) => tracing::debug!(why, "JWKS entry skipped"),
        }
    }
    Ok(keys)
}

fn verifying_key(entry: serde_json::Value) -> Result<(String, VerifyingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|_| "not a supported JWK")?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return Err("not a signature key");
    }
    // The algorithm follows from the key material; symmetric (`oct`) keys are never taken, so a
    // published public key can never serve as an HMAC secret.
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        _ => return Err("key type other than EC P-256 or RSA"),
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != declared) {
        return Err("key declared for an algorithm other than ES256/RS256");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "unusable key material")?;
    Ok((kid, VerifyingKey { alg, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_signature_keys_and_skips_the_rest() {
        let set = serde_json::json!({ "keys": [
            { "kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
              "x": "9bnn7Z8PL4U7T8yT6ySTgvWgS1yi0q_fdn5Sg2zs4KU",
              "y": "vsgik4i60XYPTN2dXlBXxbEhdhw8K6KwVUI-OPR-Aic" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
              "x": "9bnn7Z8PL4U7T8yT6ySTgvWgS1yi0q_fdn5Sg2zs4KU",
              "y": "vsgik4i60XYPTN2dXlBXxbEhdhw8K6KwVUI-OPR-Aic" },
            { "kty": "EC", "crv": "P-256", "kid": "mislabelled", "alg": "RS256",
              "x": "9bnn7Z8PL4U7T8yT6ySTgvWgS1yi0q_fdn5Sg2zs4KU",
              "y": "vsgik4i60XYPTN2dXlBXxbEhdhw8K6KwVUI-OPR-Aic" },
            { "kty": "EC", "crv": "P-256",
              "x": "9bnn7Z8PL4U7T8yT6ySTgvWgS1yi0q_fdn5Sg2zs4KU",
              "y": "vsgik4i60XYPTN2dXlBXxbEhdhw8K6KwVUI-OPR-Aic" },
            { "kty": "weird", "kid": "weird" }
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
    }

    #[test]
    fn an_empty_set_is_valid_and_garbage_is_not() {
        assert!(parse_key_set(br#"{"keys":[]}"#).unwrap().is_empty());
        assert!(parse_key_set(b"<html>").is_err());
    }
}
