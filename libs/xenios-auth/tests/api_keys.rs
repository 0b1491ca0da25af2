use xenios_auth::{AuthError, AuthSettings, Authenticator};

fn with_keys(keys: &[&str]) -> Authenticator {
    Authenticator::new(AuthSettings {
        api_keys: keys.iter().map(|k| (*k).into()).collect(),
        ..AuthSettings::default()
    })
    .unwrap()
}

#[test]
fn missing_and_wrong_keys_are_refused() {
    let auth = with_keys(&["current-key-0123456789"]);
    assert!(matches!(
        auth.check_api_key(None),
        Err(AuthError::MissingApiKey)
    ));
    assert!(matches!(
        auth.check_api_key(Some("")),
        Err(AuthError::MissingApiKey)
    ));
    for wrong in [
        "current-key-012345678",
        "current-key-01234567890",
        "x",
        "CURRENT-KEY-0123456789",
    ] {
        assert!(
            matches!(
                auth.check_api_key(Some(wrong)),
                Err(AuthError::InvalidApiKey)
            ),
            "{wrong}"
        );
    }
}

#[test]
fn both_rotated_keys_are_accepted_with_distinct_stable_ids() {
    let auth = with_keys(&["old-key-aaaaaaaa", "new-key-bbbbbbbbbbbb"]);
    let old = auth.check_api_key(Some("old-key-aaaaaaaa")).unwrap();
    let new = auth.check_api_key(Some("new-key-bbbbbbbbbbbb")).unwrap();
    assert_ne!(old, new);
    for id in [&old, &new] {
        assert!(
            !id.to_string().contains("key"),
            "the id must not reveal the key: {id}"
        );
    }
    // Same key, same id: after a restart and after the old key is retired.
    let later = with_keys(&["new-key-bbbbbbbbbbbb"]);
    assert_eq!(
        later.check_api_key(Some("new-key-bbbbbbbbbbbb")).unwrap(),
        new
    );
    assert!(matches!(
        later.check_api_key(Some("old-key-aaaaaaaa")),
        Err(AuthError::InvalidApiKey)
    ));
}

#[test]
fn no_configured_key_accepts_nothing() {
    let auth = with_keys(&[]);
    assert!(matches!(
        auth.check_api_key(Some("anything")),
        Err(AuthError::InvalidApiKey)
    ));
}

#[test]
fn public_messages_never_echo_the_presented_key() {
    let auth = with_keys(&["k1-secret-value"]);
    let err = auth.check_api_key(Some("guess-value")).unwrap_err();
    assert!(!err.public_message().contains("guess"));
    assert!(!err.to_string().contains("guess"));
}
