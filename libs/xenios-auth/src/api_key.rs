use std::fmt;

use ring::digest::{digest, SHA256};
use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::AuthError;

/// Which configured API key a request presented: a short fingerprint of the key, stable across
/// restarts and reordering of the key list, safe to log and to key rate limits on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configured keys, kept only as SHA-256 digests: comparing fixed-length digests hides the
/// keys' lengths, and the plain keys need not stay in memory.
pub(crate) struct ApiKeys {
    keys: Vec<([u8; 32], ApiKeyId)>,
}

impl ApiKeys {
    pub(crate) fn new(keys: &[SecretString]) -> Result<Self, AuthError> {
        let mut out = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            let key = key.expose_secret();
            if key.trim().is_empty() {
                return Err(AuthError::Config(format!("API key #{} is empty", n + 1)));
            }
            out.push((sha256(key.as_bytes()), fingerprint(key)));
        }
        Ok(Self { keys: out })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Compares against every key, whatever matches first, so timing reveals neither which key
    /// matched nor how close a guess came.
    pub(crate) fn check(&self, presented: Option<&str>) -> Result<ApiKeyId, AuthError> {
        let presented = match presented {
            Some(p) if !p.is_empty() => p,
            _ => return Err(AuthError::MissingApiKey),
        };
        let presented = sha256(presented.as_bytes());
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, (key, _)) in self.keys.iter().enumerate() {
            let equal = key.ct_eq(&presented);
            // The list is tiny (a handful of rotated keys), so the index always fits.
            index = u32::conditional_select(&index, &(i as u32), equal);
            found |= equal;
        }
        if bool::from(found) {
            Ok(self.keys[index as usize].1.clone())
        } else {
            Err(AuthError::InvalidApiKey)
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// 32 bits of a domain-separated hash: enough to tell a handful of keys apart, too little to
/// help anyone guess a key.
fn fingerprint(key: &str) -> ApiKeyId {
    let mut input = b"xenios-auth api key id\0".to_vec();
    input.extend_from_slice(key.as_bytes());
    let hash = sha256(&input);
    ApiKeyId(hash[..4].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> ApiKeys {
        let list: Vec<SecretString> = list.iter().map(|k| (*k).into()).collect();
        ApiKeys::new(&list).unwrap()
    }

    #[test]
    fn matches_the_right_key_whatever_its_position() {
        let k = keys(&["first-key", "second-key", "third"]);
        assert_eq!(
            k.check(Some("first-key")).unwrap(),
            fingerprint("first-key")
        );
        assert_eq!(k.check(Some("third")).unwrap(), fingerprint("third"));
        assert!(matches!(
            k.check(Some("second-ke")),
            Err(AuthError::InvalidApiKey)
        ));
    }

    #[test]
    fn fingerprint_is_stable_short_and_not_the_key() {
        let id = fingerprint("super-secret");
        assert_eq!(id, fingerprint("super-secret"));
        assert_eq!(id.as_str().len(), 8);
        assert!(!id.as_str().contains("secret"));
        assert_ne!(id, fingerprint("super-secret2"));
    }

    #[test]
    fn no_keys_accept_nothing_and_empty_keys_are_refused() {
        let k = keys(&[]);
        assert!(matches!(k.check(Some("x")), Err(AuthError::InvalidApiKey)));
        assert!(matches!(k.check(Some("")), Err(AuthError::MissingApiKey)));
        assert!(matches!(
            ApiKeys::new(&["ok".into(), " ".into()]),
            Err(AuthError::Config(_))
        ));
    }
}
