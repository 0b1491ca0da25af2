//! The HTTP foundation: health, readiness against real dependencies, errors, authentication,
//! correlation ids, metrics, OpenAPI, CORS and rate limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn health_routes_answer_without_credentials() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    for (path, status) in [("/health", "healthy"), ("/health/live", "alive")] {
        let response = stack.http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], status);
    }
    let ready: Value = stack
        .http
        .get(stack.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "database": "ok", "nats": "ok"})
    );
}

#[tokio::test]
async fn readiness_follows_nats_going_down_and_coming_back() {
    let mut stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let ready_url = stack.url("/health/ready");
    let http = stack.http.clone();
    let probe = move || {
        let http = http.clone();
        let url = ready_url.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    };
    assert_eq!(probe().await.0, 200);

    stack.nats.stop();
    let started = std::time::Instant::now();
    let mut down = None;
    while started.elapsed() < Duration::from_secs(5) {
        let (status, body) = probe().await;
        if status == 503 {
            down = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = down.expect("503 within 5 s of NATS stopping");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["database"], "ok");
    assert!(
        body["nats"].as_str().unwrap().starts_with("error"),
        "{body}"
    );

    stack.nats.start_again().unwrap();
    eventually(Duration::from_secs(15), || {
        let probe = probe.clone();
        async move { probe().await.0 == 200 }
    })
    .await;
}

#[tokio::test]
async fn readiness_names_a_database_that_is_down() {
    let mut pg = xenios_devstack::PgServer::start().unwrap();
    let nats = xenios_devstack::NatsServer::start().unwrap();
    let settings = settings(&nats.url(), &pg.url(), &[]);
    let url = format!("{}/health/ready", serve_api(&settings).await);
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(10), || {
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).send().await.unwrap().status() == 200 }
    })
    .await;

    pg.stop();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["database"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
    assert_eq!(body["nats"], "ok");

    pg.start_again().unwrap();
    eventually(Duration::from_secs(15), || {
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).send().await.unwrap().status() == 200 }
    })
    .await;
}

#[tokio::test]
async fn errors_have_one_shape_and_carry_the_correlation_id() {
    let stack = Stack::start_with(Db::Sqlite, &[("api.body_limit_bytes", "2048")], 0).await;

    // Unknown route.
    let response = stack.get("/api/v1/nope").send().await.unwrap();
    error_body(response, 404, "not_found").await;

    // Malformed JSON → 400.
    let response = stack
        .post("/api/v1/jobs")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    error_body(response, 400, "invalid_input").await;

    // Wrong content type → 415.
    let response = stack
        .post("/api/v1/jobs")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    error_body(response, 415, "unsupported_media_type").await;

    // Body too large → 413.
    let big = "x".repeat(10_000);
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"message": big}}))
        .send()
        .await
        .unwrap();
    error_body(response, 413, "payload_too_large").await;

    // Well-formed but invalid → 422 with field details.
    for (body, field) in [
        (json!({"input": {"message": 1}}), "kind"),
        (
            json!({"kind": "echo", "input": {"message": 1}, "extra": 1}),
            "extra",
        ),
        (
            json!({"kind": "echo", "input": {"message": 1, "fail": "sometimes"}}),
            "input.fail",
        ),
        // PostgreSQL cannot store U+0000: refused up front on either database, not a 500.
        (
            json!({"kind": "echo", "input": {"message": {"list": ["a\u{0}b"]}}}),
            "input.message.list[0]",
        ),
    ] {
        let response = stack.post("/api/v1/jobs").json(&body).send().await.unwrap();
        let answer = error_body(response, 422, "invalid_input").await;
        assert_eq!(
            answer["error"]["details"][0]["field"], field,
            "{body}: {answer}"
        );
    }
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "video", "input": {}}))
        .send()
        .await
        .unwrap();
    let body = error_body(response, 422, "invalid_input").await;
    assert_eq!(body["error"]["details"][0]["field"], "kind");
    let response = stack
        .post("/api/v1/jobs")
        .json(&json!({"kind": "echo", "input": {"delay_ms": 5}}))
        .send()
        .await
        .unwrap();
    let body = error_body(response, 422, "invalid_input").await;
    assert_eq!(body["error"]["details"][0]["field"], "input.message");

    // No credentials → 401.
    let response = stack
        .http
        .get(stack.url("/api/v1/status"))
        .send()
        .await
        .unwrap();
    error_body(response, 401, "unauthorized").await;

    // The caller's correlation id is echoed and is the error's request_id.
    let response = stack
        .get("/api/v1/nope")
        .header("X-Correlation-ID", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "req-abc-123");
    let body = error_body(response, 404, "not_found").await;
    assert_eq!(body["error"]["request_id"], "req-abc-123");

    // A made-up one when the caller sends none, and an unsafe one is replaced.
    let response = stack.http.get(stack.url("/health")).send().await.unwrap();
    assert!(!response.headers()["x-correlation-id"].is_empty());
    let response = stack
        .http
        .get(stack.url("/health"))
        .header("X-Correlation-ID", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-correlation-id"], "bad id with spaces");

    // Under /v1/ even a route that does not exist answers in OpenAI's shape.
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/embeddings", 404),
        (reqwest::Method::GET, "/v1/chat/completions", 405),
    ] {
        let response = stack
            .http
            .request(method, stack.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["type"].is_string(), "{path}: {body}");
        assert!(body["error"]["request_id"].is_null(), "{path}: {body}");
    }
}

/// A transcription's `language` is checked at submission by the rule the transcriber applies,
/// so a tag it would refuse (`en_US`) is a 422 naming the field, not a job accepted and then
/// failed by the consumer.
#[tokio::test]
async fn a_transcription_language_is_checked_at_submission_as_the_consumer_checks_it() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    // An IP literal of a public address: checked without DNS, and never fetched (no consumer).
    let url = "https://1.1.1.1/session.wav";
    let too_long = "a".repeat(36);
    for language in ["en_US", "en US", "e", "-en", "fr;", too_long.as_str()] {
        let response = stack
            .post("/api/v1/jobs")
            .json(&json!({"kind": "transcription", "input": {"url": url, "language": language}}))
            .send()
            .await
            .unwrap();
        let body = error_body(response, 422, "invalid_input").await;
        assert_eq!(
            body["error"]["details"][0]["field"], "input.language",
            "{language}: {body}"
        );
    }
    for language in ["en", "pt-BR", "zh-Hant-TW"] {
        stack
            .submit("transcription", json!({"url": url, "language": language}))
            .await;
    }
}

#[tokio::test]
async fn api_keys_and_user_tokens() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let status = stack.url("/api/v1/status");
    let me = stack.url("/api/v1/me");

    let r = stack.http.get(&status).send().await.unwrap();
    error_body(r, 401, "unauthorized").await;
    let r = stack
        .http
        .get(&status)
        .header("X-API-Key", "wrong-key-0000000000")
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    for key in [API_KEY, OTHER_API_KEY] {
        let r = stack
            .http
            .get(&status)
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "rotated key {key}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["service"], "xenios-api");
        assert_eq!(body["queues"].as_array().unwrap().len(), 4);
    }

    // A user route with a key but no token.
    let r = stack
        .http
        .get(&me)
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    // A token but no key.
    let r = stack
        .http
        .get(&me)
        .bearer_auth(stack.token(USER))
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    // Both.
    let r = stack.get("/api/v1/me").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user_id"], USER);
    assert_eq!(body["role"], "authenticated");
    assert_eq!(body["service_role"], false);

    // Bad tokens.
    let expired = xenios_auth::mint_hs256(
        JWT_SECRET,
        USER,
        "authenticated",
        None,
        "authenticated",
        Duration::ZERO,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let wrong_audience = xenios_auth::mint_hs256(
        JWT_SECRET,
        USER,
        "authenticated",
        None,
        "anon",
        Duration::from_secs(60),
    )
    .unwrap();
    let wrong_secret = xenios_auth::mint_hs256(
        "another-secret-0123456789abcdef",
        USER,
        "authenticated",
        None,
        "authenticated",
        Duration::from_secs(60),
    )
    .unwrap();
    let none_alg = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"{USER}","aud":"authenticated","exp":9999999999,"role":"service_role"}}"#
        ))
    );
    for (name, token) in [
        ("wrong audience", wrong_audience),
        ("wrong secret", wrong_secret),
        ("alg none", none_alg),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let r = stack
            .http
            .get(&me)
            .header("X-API-Key", API_KEY)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        error_body(r, 401, "unauthorized").await;
    }
    // Expired beyond the leeway is refused too (leeway 30 s: mint one that expired long ago).
    let _ = expired;
    let long_expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": USER, "aud": "authenticated", "role": "authenticated", "exp": 1_000_000_000}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let r = stack
        .http
        .get(&me)
        .header("X-API-Key", API_KEY)
        .bearer_auth(long_expired)
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn users_see_only_their_own_jobs_and_service_role_sees_all() {
    let stack = Stack::start_with(Db::Sqlite, &[], 0).await;
    let id = stack.submit("echo", json!({"message": "mine"})).await;
    let theirs = stack
        .authed(
            stack.http.get(stack.url(&format!("/api/v1/jobs/{id}"))),
            OTHER_USER,
        )
        .send()
        .await
        .unwrap();
    error_body(theirs, 404, "not_found").await;
    let service = stack
        .http
        .get(stack.url(&format!("/api/v1/jobs/{id}")))
        .header("X-API-Key", API_KEY)
        .bearer_auth(token_for(OTHER_USER, "service_role"))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), 200);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("rate_limit.jobs.per_second", "1"),
            ("rate_limit.jobs.burst", "2"),
        ],
        0,
    )
    .await;
    let mut codes = Vec::new();
    let mut limited = None;
    for i in 0..4 {
        let r = stack
            .post("/api/v1/jobs")
            .json(&json!({"kind": "echo", "input": {"message": i}}))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.unwrap_or_else(|| panic!("no 429 in {codes:?}"));
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    error_body(r, 429, "rate_limited").await;
    // Another user has a bucket of their own.
    stack
        .submit_as(OTHER_USER, "echo", json!({"message": "other"}))
        .await;
}

/// Every user's requests, reads included, count against a bucket of their own: a user polling
/// in a tight loop is refused before the key that every user of the web app shares runs dry.
#[tokio::test]
async fn one_users_requests_do_not_spend_anothers_allowance() {
    let stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("rate_limit.per_user.per_second", "1"),
            ("rate_limit.per_user.burst", "3"),
        ],
        0,
    )
    .await;
    let mut codes = Vec::new();
    let refused = loop {
        let r = stack.get("/api/v1/jobs").send().await.unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 || codes.len() == 10 {
            break r;
        }
    };
    // A refill (one a second) may slip in on a slow machine, but not before the burst is spent.
    assert_eq!(codes[..3], [200, 200, 200], "{codes:?}");
    assert!(refused.headers().contains_key("retry-after"), "{codes:?}");
    error_body(refused, 429, "rate_limited").await;
    let other = stack
        .authed(stack.http.get(stack.url("/api/v1/jobs")), OTHER_USER)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn metrics_openapi_docs_and_cors() {
    let stack = Stack::start_with(
        Db::Sqlite,
        &[("api.cors_origins", "https://app.xenios.example")],
        0,
    )
    .await;
    stack.http.get(stack.url("/health")).send().await.unwrap();
    stack
        .get("/api/v1/jobs/00000000-0000-7000-8000-000000000000")
        .send()
        .await
        .unwrap();
    stack
        .http
        .get(stack.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    for made_up in ["RND1", "RND2"] {
        let method = reqwest::Method::from_bytes(made_up.as_bytes()).unwrap();
        stack
            .http
            .request(method, stack.url("/health"))
            .send()
            .await
            .unwrap();
    }
    let metrics = stack.metrics().await;
    assert!(
        metrics
            .contains(r#"xenios_http_requests_total{method="GET",route="/health",status="200"}"#),
        "{metrics}"
    );
    // A method a client made up is not a label of its own: anyone could grow the registry.
    assert!(!metrics.contains("RND1"), "{metrics}");
    assert!(
        metrics.contains(
            r#"xenios_http_requests_total{method="other",route="unmatched",status="405"}"#
        ),
        "{metrics}"
    );
    // Refused by the authentication, counted under the route asked for.
    assert!(
        metrics.contains(
            r#"xenios_http_requests_total{method="GET",route="/api/v1/jobs",status="401"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/v1/jobs/{id}",status="404""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("xenios_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let api: Value = stack
        .http
        .get(stack.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/health/ready",
        "/api/v1/status",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/events",
        "/api/v1/jobs/{id}/cancel",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI description"
        );
    }
    let docs = stack.http.get(stack.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);

    let preflight = stack
        .http
        .request(reqwest::Method::OPTIONS, stack.url("/api/v1/jobs"))
        .header("Origin", "https://app.xenios.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "x-api-key,authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.xenios.example"
    );
    // The web app deletes its uploads and its users' data from the browser too.
    let preflight = stack
        .http
        .request(reqwest::Method::OPTIONS, stack.url("/api/v1/files/x"))
        .header("Origin", "https://app.xenios.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("DELETE"), "{allowed}");
    let foreign = stack
        .http
        .get(stack.url("/health"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn event_streams_past_the_instance_limit_are_refused_with_retry_after() {
    let stack = Stack::start_with(Db::Sqlite, &[("api.max_sse_clients", "1")], 1).await;
    let slow = stack
        .submit("echo", json!({"message": "slow", "delay_ms": 1500}))
        .await;
    let open = stack
        .get(&format!("/api/v1/jobs/{slow}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let refused = stack
        .get(&format!("/api/v1/jobs/{slow}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "5");
    error_body(refused, 503, "unavailable").await;
    // Once the first stream ends, its place is free again (the server lets go of it just
    // after the client has read the end).
    let events = read_sse(open, Duration::from_secs(10)).await;
    assert_eq!(events.last().unwrap().json()["status"], "succeeded");
    eventually(Duration::from_secs(5), || async {
        let again = stack
            .get(&format!("/api/v1/jobs/{slow}/events"))
            .send()
            .await
            .unwrap();
        again.status() == 200
    })
    .await;
}

/// One user cannot take every event stream of an instance: past its own limit it is told
/// 429, while other users, and the service role, still get theirs.
#[tokio::test]
async fn event_streams_past_a_users_limit_are_refused_with_retry_after() {
    let stack = Stack::start_with(Db::Sqlite, &[("api.max_sse_clients_per_user", "1")], 1).await;
    let slow = stack
        .submit("echo", json!({"message": "slow", "delay_ms": 1500}))
        .await;
    let events = format!("/api/v1/jobs/{slow}/events");
    let open = stack.get(&events).send().await.unwrap();
    assert_eq!(open.status(), 200);
    let refused = stack.get(&events).send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = error_body(refused, 429, "rate_limited").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event streams open"),
        "{body}"
    );
    let service = stack
        .http
        .get(stack.url(&events))
        .header("X-API-Key", API_KEY)
        .bearer_auth(token_for(OTHER_USER, "service_role"))
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), 200);
    // Once the first stream ends, the user may open another.
    read_sse(open, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), || async {
        stack.get(&events).send().await.unwrap().status() == 200
    })
    .await;
}

#[tokio::test]
async fn cors_origins_star_allows_every_origin() {
    let stack = Stack::start_with(Db::Sqlite, &[("api.cors_origins", "*")], 0).await;
    let preflight = stack
        .http
        .request(reqwest::Method::OPTIONS, stack.url("/api/v1/jobs"))
        .header("Origin", "https://anywhere.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

/// A client that sends half its body and stalls is answered once `api.request_timeout_secs`
/// has passed, in the error format, and holds nothing past it.
#[tokio::test]
async fn a_request_past_its_deadline_answers_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start_with(Db::Sqlite, &[("api.request_timeout_secs", "1")], 0).await;
    let addr = stack.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let token = stack.token(USER);
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {API_KEY}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("answered, not left waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");
}

#[tokio::test]
async fn production_hides_docs_and_refuses_to_start_without_a_key() {
    let nats = xenios_devstack::NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let env: std::collections::HashMap<String, String> =
        [("ENVIRONMENT".to_string(), "production".to_string())].into();
    let err =
        xenios_config::Settings::load_from(Some(std::path::Path::new("/dev/null")), &env, &vec![])
            .unwrap_err()
            .to_string();
    assert!(err.contains("XENIOS_BACKEND_API_KEY"), "{err}");

    let settings = settings(&nats.url(), &db, &[("environment", "production")]);
    let base = serve_api(&settings).await;
    let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(docs.status(), 404);
    assert_eq!(
        reqwest::get(format!("{base}/openapi.json"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// ES256 tokens checked against a JWKS the test serves, through the whole HTTP stack: a known
/// key is accepted, a token from a key the JWKS only learns later is accepted after a refetch,
/// and an HS256 token forged with the public key is refused.
#[tokio::test]
async fn es256_tokens_via_jwks_and_refetch_on_unknown_kid() {
    use std::sync::{Arc, Mutex};

    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libs/xenios-auth/tests/fixtures");
    let read = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    let jwk = |name: &str| -> Value { serde_json::from_slice(&read(name)).unwrap() };
    let served = Arc::new(Mutex::new(json!({"keys": [jwk("ec1.jwk.json")]})));
    let fetches = Arc::new(Mutex::new(0u32));
    let app = {
        let (served, fetches) = (served.clone(), fetches.clone());
        axum::Router::new().route(
            "/auth/v1/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    *fetches.lock().unwrap() += 1;
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let supabase = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stack = Stack::start_with(
        Db::Sqlite,
        &[
            ("auth.supabase_url", supabase.as_str()),
            ("auth.jwks_min_refetch_secs", "0"),
        ],
        0,
    )
    .await;
    let sign = |pem: &str, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &header,
            &json!({"sub": USER, "aud": "authenticated", "role": "authenticated", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_ec_pem(&read(pem)).unwrap(),
        )
        .unwrap()
    };
    let me = |token: String| {
        stack
            .http
            .get(stack.url("/api/v1/me"))
            .header("X-API-Key", API_KEY)
            .bearer_auth(token)
            .send()
    };

    let r = me(sign("ec1.pem", "ec-key-1")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user_id"], USER);

    // A key the JWKS does not have yet: refused; once published, the unknown kid makes the
    // verifier fetch the set again and the same token passes.
    let kid2 = jwk("ec2.jwk.json")["kid"].as_str().unwrap().to_owned();
    let token2 = sign("ec2.pem", &kid2);
    error_body(me(token2.clone()).await.unwrap(), 401, "unauthorized").await;
    let before = *fetches.lock().unwrap();
    served.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(jwk("ec2.jwk.json"));
    assert_eq!(me(token2).await.unwrap().status(), 200);
    assert!(
        *fetches.lock().unwrap() > before,
        "the unknown kid caused a refetch"
    );

    // Algorithm confusion: HS256 signed with the EC public key material is refused.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("ec-key-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"sub": USER, "aud": "authenticated", "role": "service_role", "exp": 9_999_999_999u64}),
        &jsonwebtoken::EncodingKey::from_secret(&read("ec1.jwk.json")),
    )
    .unwrap();
    error_body(me(forged).await.unwrap(), 401, "unauthorized").await;
}
