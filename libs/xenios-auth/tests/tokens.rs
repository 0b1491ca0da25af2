//! Bearer-token verification end to end: HS256 with the secret, ES256/RS256 through a JWKS
//! served over real HTTP by the test.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::*;
use xenios_auth::{mint_hs256, AuthError, AuthSettings, Authenticator, UserContext};

fn hs_auth() -> Authenticator {
    Authenticator::new(AuthSettings {
        jwt_secret: Some(HS_SECRET.into()),
        ..AuthSettings::default()
    })
    .unwrap()
}

async fn verify(auth: &Authenticator, token: &str) -> Result<UserContext, AuthError> {
    auth.verify_bearer(Some(&bearer(token))).await
}

#[track_caller]
fn assert_invalid(result: Result<UserContext, AuthError>, reason: &str) {
    match result {
        Err(AuthError::InvalidToken(r)) => assert_eq!(r, reason),
        other => panic!("expected InvalidToken({reason:?}), got {other:?}"),
    }
}

#[tokio::test]
async fn valid_hs256_token_yields_the_user() {
    let token = sign(Algorithm::HS256, None, &hs(), &claims("user-1"));
    let user = verify(&hs_auth(), &token).await.unwrap();
    assert_eq!(
        user,
        UserContext {
            user_id: "user-1".into(),
            role: "authenticated".into(),
            email: Some("user@example.com".into()),
            llm_daily_budget_usd: None,
        }
    );
    assert!(!user.is_service_role());
}

/// A plan's daily LLM budget rides in `app_metadata` (which only the platform sets); a value
/// that is not a non-negative number is no budget, and never costs the user their token.
#[tokio::test]
async fn app_metadata_may_set_the_users_daily_llm_budget() {
    let with = |metadata: serde_json::Value| {
        let mut claims = claims("user-1");
        claims["app_metadata"] = metadata;
        sign(Algorithm::HS256, None, &hs(), &claims)
    };
    for (metadata, budget) in [
        (
            json!({"provider": "email", "llm_daily_budget_usd": 2.5}),
            Some(2.5),
        ),
        (json!({"llm_daily_budget_usd": 0}), Some(0.0)),
        (json!({"llm_daily_budget_usd": -1}), None),
        (json!({"llm_daily_budget_usd": "lots"}), None),
        (json!({"provider": "email"}), None),
        (json!("not an object"), None),
    ] {
        let user = verify(&hs_auth(), &with(metadata.clone())).await.unwrap();
        assert_eq!(user.llm_daily_budget_usd, budget, "{metadata}");
    }
    // What the user may edit themselves counts for nothing.
    let mut claims = claims("user-1");
    claims["user_metadata"] = json!({"llm_daily_budget_usd": 1000});
    let token = sign(Algorithm::HS256, None, &hs(), &claims);
    assert_eq!(
        verify(&hs_auth(), &token)
            .await
            .unwrap()
            .llm_daily_budget_usd,
        None
    );
}

#[tokio::test]
async fn hs256_with_another_secret_is_a_bad_signature() {
    let token = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"some-other-secret"),
        &claims("u"),
    );
    assert_invalid(verify(&hs_auth(), &token).await, "bad signature");
}

#[tokio::test]
async fn mint_hs256_round_trips_with_every_claim() {
    let token = mint_hs256(
        HS_SECRET,
        "user-7",
        "service_role",
        Some("ops@example.com"),
        "authenticated",
        Duration::from_secs(600),
    )
    .unwrap();
    let user = verify(&hs_auth(), &token).await.unwrap();
    assert_eq!(user.user_id, "user-7");
    assert_eq!(user.email.as_deref(), Some("ops@example.com"));
    assert!(user.is_service_role());

    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["role"], "service_role");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert!((iat - now()).abs() <= 5);

    let anonymous_email = mint_hs256(
        HS_SECRET,
        "u",
        "authenticated",
        None,
        "authenticated",
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        verify(&hs_auth(), &anonymous_email).await.unwrap().email,
        None
    );
    assert!(matches!(
        mint_hs256(
            "",
            "u",
            "authenticated",
            None,
            "authenticated",
            Duration::from_secs(60)
        ),
        Err(AuthError::Config(_))
    ));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let auth = hs_auth();
    let mut c = claims("u");
    c["aud"] = json!("someone-else");
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "wrong audience",
    );
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "missing aud claim",
    );

    let custom = Authenticator::new(AuthSettings {
        jwt_secret: Some(HS_SECRET.into()),
        audience: "xenios".into(),
        ..AuthSettings::default()
    })
    .unwrap();
    let token = mint_hs256(
        HS_SECRET,
        "u",
        "authenticated",
        None,
        "xenios",
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(verify(&custom, &token).await.is_ok());
    assert_invalid(verify(&auth, &token).await, "wrong audience");
}

#[tokio::test]
async fn expiry_is_required_and_enforced_with_leeway() {
    let auth = hs_auth();
    let mut c = claims("u");
    c["exp"] = json!(now() - 120);
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "expired",
    );
    // Within the default 30 s of clock skew.
    c["exp"] = json!(now() - 5);
    assert!(verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c))
        .await
        .is_ok());
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "missing exp claim",
    );
}

#[tokio::test]
async fn not_before_is_honoured() {
    let auth = hs_auth();
    let mut c = claims("u");
    c["nbf"] = json!(now() + 600);
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "not yet valid",
    );
    c["nbf"] = json!(now() - 1);
    assert!(verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c))
        .await
        .is_ok());
}

#[tokio::test]
async fn subject_and_role_are_required() {
    let auth = hs_auth();
    let mut c = claims("u");
    c.as_object_mut().unwrap().remove("sub");
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "missing sub claim",
    );
    let mut c = claims("u");
    c.as_object_mut().unwrap().remove("role");
    assert_invalid(
        verify(&auth, &sign(Algorithm::HS256, None, &hs(), &c)).await,
        "missing role claim",
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = Authenticator::new(AuthSettings {
        jwt_secret: Some(HS_SECRET.into()),
        ..server.settings()
    })
    .unwrap();
    let payload = URL_SAFE_NO_PAD.encode(claims("attacker").to_string());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"none","kid":"ec-key-1"}"#,
    ] {
        let header = URL_SAFE_NO_PAD.encode(header);
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_invalid(verify(&auth, &token).await, "algorithm not allowed");
        }
    }
    assert_eq!(
        server.fetches(),
        0,
        "an unsigned token must not even reach the JWKS"
    );
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let server = JwksServer::start(vec![jwk("rsa"), jwk("ec1")]).await;
    let confused = EncodingKey::from_secret(&fixture("rsa_pub.pem"));
    let token = sign(
        Algorithm::HS256,
        Some(RSA_KID),
        &confused,
        &claims("attacker"),
    );

    // Only a JWKS: HS256 has no key at all.
    assert_invalid(
        verify(&server.authenticator(), &token).await,
        "algorithm not allowed",
    );
    // A JWKS and a secret: HS256 is checked against the secret alone.
    let both = Authenticator::new(AuthSettings {
        jwt_secret: Some(HS_SECRET.into()),
        ..server.settings()
    })
    .unwrap();
    assert_invalid(verify(&both, &token).await, "bad signature");
    assert_eq!(server.fetches(), 0);

    // Same attack with the JWK text of the key as the secret.
    let confused = EncodingKey::from_secret(jwk("rsa").to_string().as_bytes());
    let token = sign(
        Algorithm::HS256,
        Some(RSA_KID),
        &confused,
        &claims("attacker"),
    );
    assert_invalid(verify(&both, &token).await, "bad signature");
}

#[tokio::test]
async fn a_header_alg_that_does_not_match_the_key_type_is_refused() {
    let server = JwksServer::start(vec![jwk("rsa"), jwk("ec1")]).await;
    let auth = server.authenticator();
    // RS256 signature relabelled ES256, and an RS256 header pointing at the EC key.
    let rs = sign(Algorithm::RS256, Some(RSA_KID), &rsa(), &claims("u"));
    let relabelled_header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{RSA_KID}"}}"#));
    let relabelled = format!("{relabelled_header}.{}", rs.split_once('.').unwrap().1);
    assert_invalid(verify(&auth, &relabelled).await, "algorithm not allowed");
    let wrong_kid = sign(Algorithm::RS256, Some(EC1_KID), &rsa(), &claims("u"));
    assert_invalid(verify(&auth, &wrong_kid).await, "algorithm not allowed");
}

#[tokio::test]
async fn asymmetric_tokens_need_a_jwks_and_a_kid() {
    let token = sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u"));
    assert_invalid(verify(&hs_auth(), &token).await, "algorithm not allowed");
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let no_kid = sign(Algorithm::ES256, None, &ec1(), &claims("u"));
    assert_invalid(
        verify(&server.authenticator(), &no_kid).await,
        "missing key id",
    );
    let hs = sign(Algorithm::HS256, None, &hs(), &claims("u"));
    assert_invalid(
        verify(&server.authenticator(), &hs).await,
        "algorithm not allowed",
    );
}

#[tokio::test]
async fn valid_es256_token_via_jwks() {
    let server = JwksServer::start(vec![jwk("ec1"), jwk("rsa")]).await;
    let auth = server.authenticator();
    let token = sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("user-es"));
    let user = verify(&auth, &token).await.unwrap();
    assert_eq!(user.user_id, "user-es");
    assert_eq!(user.role, "authenticated");
    // Cached: a second verification does not fetch again.
    verify(&auth, &token).await.unwrap();
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn valid_rs256_token_via_jwks() {
    let server = JwksServer::start(vec![jwk("ec1"), jwk("rsa")]).await;
    let token = sign(Algorithm::RS256, Some(RSA_KID), &rsa(), &claims("user-rs"));
    let user = verify(&server.authenticator(), &token).await.unwrap();
    assert_eq!(user.user_id, "user-rs");
}

#[tokio::test]
async fn a_known_kid_signed_by_another_key_is_a_bad_signature() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let forged = sign(Algorithm::ES256, Some(EC1_KID), &ec2(), &claims("u"));
    assert_invalid(
        verify(&server.authenticator(), &forged).await,
        "bad signature",
    );
}

#[tokio::test]
async fn asymmetric_tokens_get_the_same_claim_checks() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = server.authenticator();
    let mut c = claims("u");
    c["exp"] = json!(now() - 600);
    assert_invalid(
        verify(&auth, &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &c)).await,
        "expired",
    );
    let mut c = claims("u");
    c["aud"] = json!(["anon", "other"]);
    assert_invalid(
        verify(&auth, &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &c)).await,
        "wrong audience",
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_rotated_set() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = Authenticator::new(AuthSettings {
        jwks_min_refetch_interval: Duration::ZERO,
        ..server.settings()
    })
    .unwrap();
    verify(
        &auth,
        &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u")),
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);

    server.serve(vec![jwk("ec1"), jwk("ec2")]);
    let rotated = sign(Algorithm::ES256, Some(EC2_KID), &ec2(), &claims("u2"));
    assert_eq!(verify(&auth, &rotated).await.unwrap().user_id, "u2");
    assert_eq!(server.fetches(), 2);
    // Both keys now come from the cache.
    verify(&auth, &rotated).await.unwrap();
    verify(
        &auth,
        &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u")),
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_fetch_per_interval() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = Authenticator::new(AuthSettings {
        jwks_min_refetch_interval: Duration::from_secs(3600),
        ..server.settings()
    })
    .unwrap();
    verify(
        &auth,
        &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u")),
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);

    // In a row…
    for n in 0..20 {
        let kid = format!("forged-{n}");
        let token = sign(Algorithm::ES256, Some(&kid), &ec2(), &claims("u"));
        assert_invalid(verify(&auth, &token).await, "unknown key");
    }
    // …and all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let auth = auth.clone();
        let token = sign(
            Algorithm::ES256,
            Some(&format!("burst-{n}")),
            &ec2(),
            &claims("u"),
        );
        tasks.spawn(async move { verify(&auth, &token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_invalid(result.unwrap(), "unknown key");
    }
    assert_eq!(
        server.fetches(),
        1,
        "the interval since the first fetch has not passed"
    );

    // Even a genuinely rotated key waits for the interval; known keys keep working meanwhile.
    server.serve(vec![jwk("ec1"), jwk("ec2")]);
    let rotated = sign(Algorithm::ES256, Some(EC2_KID), &ec2(), &claims("u"));
    assert_invalid(verify(&auth, &rotated).await, "unknown key");
    verify(
        &auth,
        &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u")),
    )
    .await
    .unwrap();
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_refetch_happens_once_the_interval_has_passed() {
    let interval = Duration::from_secs(1);
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = Authenticator::new(AuthSettings {
        jwks_min_refetch_interval: interval,
        ..server.settings()
    })
    .unwrap();
    let first_fetch = Instant::now();
    verify(
        &auth,
        &sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u")),
    )
    .await
    .unwrap();
    server.serve(vec![jwk("ec1"), jwk("ec2")]);
    let rotated = sign(Algorithm::ES256, Some(EC2_KID), &ec2(), &claims("u"));

    let deadline = Instant::now() + DEADLINE;
    let mut refusals = 0;
    let accepted_at = loop {
        match verify(&auth, &rotated).await {
            Ok(_) => break Instant::now(),
            Err(AuthError::InvalidToken(r)) if r == "unknown key" => refusals += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(refusals > 0);
    assert!(accepted_at - first_fetch >= interval);
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn concurrent_cold_verifications_fetch_once() {
    let server = JwksServer::start(vec![jwk("ec1"), jwk("rsa")]).await;
    let auth = server.authenticator();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..32 {
        let auth = auth.clone();
        let token = if n % 2 == 0 {
            sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u"))
        } else {
            sign(Algorithm::RS256, Some(RSA_KID), &rsa(), &claims("u"))
        };
        tasks.spawn(async move { verify(&auth, &token).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn trusted_keys_survive_an_endpoint_outage() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    // Every verification finds the set stale and may refetch.
    let auth = Authenticator::new(AuthSettings {
        jwks_cache_ttl: Duration::ZERO,
        jwks_min_refetch_interval: Duration::ZERO,
        ..server.settings()
    })
    .unwrap();
    let token = sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u"));
    verify(&auth, &token).await.unwrap();
    server.set_mode(Mode::Fail);
    verify(&auth, &token).await.unwrap();
    // The stale set is fetched again beside the request.
    refetched(&server).await;
    let unknown = sign(Algorithm::ES256, Some(EC2_KID), &ec2(), &claims("u"));
    assert!(matches!(
        verify(&auth, &unknown).await,
        Err(AuthError::JwksUnavailable(_))
    ));
    // Recovery: the endpoint serves again, the rotated key arrives.
    server.set_mode(Mode::Serve);
    server.serve(vec![jwk("ec1"), jwk("ec2")]);
    verify(&auth, &unknown).await.unwrap();
}

/// Waits for the server's second fetch: the stale set fetched again beside a request.
async fn refetched(server: &JwksServer) {
    let deadline = Instant::now() + DEADLINE;
    while server.fetches() < 2 {
        assert!(
            Instant::now() < deadline,
            "the stale set was never refetched"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An identity provider that hangs must not hold up the requests whose keys are known: only
/// a key never seen waits for the endpoint.
#[tokio::test]
async fn a_stale_set_serves_known_keys_while_the_endpoint_hangs() {
    let server = JwksServer::start(vec![jwk("ec1")]).await;
    let auth = Authenticator::new(AuthSettings {
        jwks_cache_ttl: Duration::ZERO,
        jwks_min_refetch_interval: Duration::ZERO,
        http_timeout: Duration::from_secs(120),
        ..server.settings()
    })
    .unwrap();
    let token = sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u"));
    verify(&auth, &token).await.unwrap();
    server.set_mode(Mode::Hang);
    let known = || async {
        tokio::time::timeout(DEADLINE, verify(&auth, &token))
            .await
            .expect("a known key waited for the hanging endpoint")
            .unwrap();
    };
    known().await;
    refetched(&server).await;
    for _ in 0..3 {
        known().await;
    }
    // One fetch at a time: the hanging one holds the others back.
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn an_unreachable_or_broken_jwks_is_unavailable_not_unauthorised() {
    let token = sign(Algorithm::ES256, Some(EC1_KID), &ec1(), &claims("u"));
    for mode in [Mode::Fail, Mode::Huge, Mode::Hang] {
        let server = JwksServer::start(vec![jwk("ec1")]).await;
        server.set_mode(mode);
        let auth = Authenticator::new(AuthSettings {
            http_timeout: Duration::from_millis(300),
            ..server.settings()
        })
        .unwrap();
        let err = verify(&auth, &token).await.unwrap_err();
        assert!(matches!(err, AuthError::JwksUnavailable(_)), "{err:?}");
        assert!(!err.public_message().contains("127.0.0.1"));
        // The failure counts towards the refetch bound: no retry storm against a broken endpoint.
        assert!(matches!(
            verify(&auth, &token).await,
            Err(AuthError::JwksUnavailable(_))
        ));
        assert_eq!(server.fetches(), 1);
    }
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_parsing() {
    let mut c = claims("u");
    c["email"] = json!("x".repeat(9 * 1024));
    let token = sign(Algorithm::HS256, None, &hs(), &c);
    assert_invalid(verify(&hs_auth(), &token).await, "too large");
    let garbage = "a".repeat(64 * 1024);
    assert_invalid(verify(&hs_auth(), &garbage).await, "too large");
}

#[tokio::test]
async fn missing_and_malformed_headers() {
    let auth = hs_auth();
    assert!(matches!(
        auth.verify_bearer(None).await,
        Err(AuthError::MissingToken)
    ));
    assert!(matches!(
        auth.verify_bearer(Some("")).await,
        Err(AuthError::MissingToken)
    ));
    let token = sign(Algorithm::HS256, None, &hs(), &claims("u"));
    for bad in [
        token.clone(),
        format!("Basic {token}"),
        "Bearer".to_string(),
        "Bearer not-a-jwt".to_string(),
        "Bearer a.b.c".to_string(),
        format!("Bearer {token}.extra"),
    ] {
        let err = auth.verify_bearer(Some(&bad)).await.unwrap_err();
        assert!(matches!(err, AuthError::MalformedToken), "{bad}: {err:?}");
    }
    // A valid header with a corrupted payload.
    let (head, rest) = token.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    let broken = format!("Bearer {head}.!!!.{sig}");
    assert!(auth.verify_bearer(Some(&broken)).await.is_err());
    // Scheme is case-insensitive.
    assert!(auth
        .verify_bearer(Some(&format!("bearer {token}")))
        .await
        .is_ok());
}
