//! The fetcher against a real HTTP server on 127.0.0.1, reachable only because each test
//! allow-lists it explicitly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{stream, StreamExt as _};
use xenios_fetch::{check_url, FetchError, FetchPolicy, Fetcher, Refusal};

async fn serve() -> u16 {
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "hello") }),
        )
        .route(
            "/redirect",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())]).into_response()
            }),
        )
        .route(
            "/loop",
            get(|| async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/loop")]) }),
        )
        .route("/declared", get(|| async { vec![b'x'; 4096] }))
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                Body::from_stream(stream::repeat(Ok::<_, Infallible>(chunk)))
            }),
        )
        .route(
            "/hang",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route(
            "/stall",
            get(|| async {
                let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"a start"))]);
                Response::new(Body::from_stream(first.chain(stream::pending())))
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/unavailable",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn policy(allow: &[&str]) -> FetchPolicy {
    FetchPolicy {
        allow_hosts: allow.iter().map(|h| h.to_string()).collect(),
        max_bytes: 1024,
        timeout: Duration::from_secs(5),
        max_redirects: 3,
    }
}

fn fetcher(allow: &[&str]) -> Fetcher {
    Fetcher::new(policy(allow)).unwrap()
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, FetchError>, range: &str) -> Refusal {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), "url_refused", "{err}");
    assert!(!err.retryable());
    let refusal = err.refusal().cloned().unwrap();
    match &refusal {
        Refusal::Address { range: r, .. } => assert_eq!(*r, range, "{refusal}"),
        other => assert_eq!(range, "", "{other}"),
    }
    refusal
}

#[tokio::test]
async fn refuses_non_public_urls_at_submission() {
    let policy = FetchPolicy::default();
    let cases = [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("https://192.168.0.10:8443/x", "private"),
        ("http://100.64.1.1/", "shared address space (CGNAT)"),
        ("http://[fd00::1]/", "unique local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://localhost/", "loopback"),
        ("http://LOCALHOST.:9000/", "loopback"),
    ];
    for (url, range) in cases {
        assert_refused(check_url(url, &policy).await, range);
    }
    assert_eq!(
        assert_refused(check_url("ftp://example.com/a.pdf", &policy).await, ""),
        Refusal::Scheme("ftp".into())
    );
    assert_eq!(
        assert_refused(
            check_url("http://metadata.google.internal/", &policy).await,
            ""
        ),
        Refusal::MetadataHost("metadata.google.internal".into())
    );
    let refusal = assert_refused(check_url("http://localhost/", &policy).await, "loopback");
    assert!(refusal.to_string().starts_with("`localhost` resolves to"));
}

#[tokio::test]
async fn allow_listed_hosts_pass_the_check() {
    let policy = policy(&["127.0.0.1", "localhost"]);
    check_url("http://127.0.0.1:1234/", &policy).await.unwrap();
    check_url("http://localhost/", &policy).await.unwrap();
    assert_refused(check_url("http://127.0.0.2/", &policy).await, "loopback");
}

#[tokio::test]
async fn fetches_from_an_allow_listed_server() {
    let port = serve().await;
    let fetched = fetcher(&["127.0.0.1"])
        .fetch(&format!("http://127.0.0.1:{port}/ok"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], b"hello");
    assert_eq!(fetched.content_type.as_deref(), Some("text/plain"));
    assert_eq!(fetched.final_url.path(), "/ok");

    // A name is allowed by its own entry; the resolver then lets its addresses through.
    let fetched = fetcher(&["localhost"])
        .fetch(&format!("http://localhost:{port}/ok"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], b"hello");
}

#[tokio::test]
async fn refuses_at_connect_time_a_name_that_resolves_to_loopback() {
    // The server is up and 127.0.0.1 is allowed, but `localhost` is a different host: the
    // resolver refuses its addresses, so no connection is made.
    let port = serve().await;
    let refusal = assert_refused(
        fetcher(&["127.0.0.1"])
            .fetch(&format!("http://localhost:{port}/ok"))
            .await,
        "loopback",
    );
    assert!(matches!(refusal, Refusal::Address { ref host, .. } if host == "localhost"));
}

#[tokio::test]
async fn follows_redirects_checking_every_hop() {
    let port = serve().await;
    let fetcher = fetcher(&["127.0.0.1"]);
    let base = format!("http://127.0.0.1:{port}");

    let fetched = fetcher
        .fetch(&format!("{base}/redirect?to=/ok"))
        .await
        .unwrap();
    assert_eq!(&fetched.bytes[..], b"hello");
    assert_eq!(fetched.final_url.as_str(), format!("{base}/ok"));

    let refused = [
        ("http://10.0.0.1/secret", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        (&format!("http://127.0.0.2:{port}/ok"), "loopback"),
        (&format!("http://localhost:{port}/ok"), "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
    ];
    for (target, range) in refused {
        let url = format!("{base}/redirect?to={target}");
        assert_refused(fetcher.fetch(&url).await, range);
    }
    let url = format!("{base}/redirect?to=file:///etc/passwd");
    assert_eq!(
        assert_refused(fetcher.fetch(&url).await, ""),
        Refusal::Scheme("file".into())
    );

    let err = fetcher.fetch(&format!("{base}/loop")).await.unwrap_err();
    assert!(matches!(err, FetchError::TooManyRedirects(3)), "{err}");
    assert_eq!(err.code(), "fetch_failed");
    assert!(!err.retryable());
}

#[tokio::test]
async fn stops_reading_past_the_size_limit() {
    let port = serve().await;
    let fetcher = fetcher(&["127.0.0.1"]);
    for path in ["declared", "endless"] {
        let started = Instant::now();
        let err = fetcher
            .fetch(&format!("http://127.0.0.1:{port}/{path}"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { limit: 1024 }), "{err}");
        assert_eq!(err.code(), "too_large");
        assert!(!err.retryable());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn gives_up_on_a_slow_server() {
    let port = serve().await;
    let fetcher = Fetcher::new(FetchPolicy {
        timeout: Duration::from_millis(300),
        ..policy(&["127.0.0.1"])
    })
    .unwrap();
    for path in ["hang", "stall"] {
        let started = Instant::now();
        let err = fetcher
            .fetch(&format!("http://127.0.0.1:{port}/{path}"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
        assert_eq!(err.code(), "timeout");
        assert!(err.retryable());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn classifies_error_statuses() {
    let port = serve().await;
    let fetcher = fetcher(&["127.0.0.1"]);
    let err = fetcher
        .fetch(&format!("http://127.0.0.1:{port}/missing"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    assert_eq!(err.code(), "fetch_failed");
    assert!(!err.retryable());

    let err = fetcher
        .fetch(&format!("http://127.0.0.1:{port}/unavailable"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
    assert!(err.retryable());

    // Nothing listens on port 1: a network failure, worth another try.
    let err = fetcher.fetch("http://127.0.0.1:1/").await.unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err}");
    assert!(err.retryable());
}
