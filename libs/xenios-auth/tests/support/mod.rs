//! A JWKS endpoint served by the test itself, and token builders over the fixture keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use xenios_auth::{AuthSettings, Authenticator};

pub const EC1_KID: &str = "ec-key-1";
pub const EC2_KID: &str = "ec-key-2";
pub const RSA_KID: &str = "rsa-key-1";
pub const HS_SECRET: &str = "test-only-supabase-jwt-secret-0123456789";
pub const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn jwk(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("{name}.jwk.json"))).unwrap()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Supabase-shaped claims valid for an hour.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "role": "authenticated",
        "email": "user@example.com",
        "aud": "authenticated",
        "iat": now(),
        "exp": now() + 3600,
    })
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn ec1() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("ec1.pem")).unwrap()
}

pub fn ec2() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("ec2.pem")).unwrap()
}

pub fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap()
}

pub fn hs() -> EncodingKey {
    EncodingKey::from_secret(HS_SECRET.as_bytes())
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Fail,
    Hang,
    Huge,
}

struct Served {
    keys: Vec<Value>,
    mode: Mode,
}

#[derive(Clone)]
struct Shared {
    served: Arc<Mutex<Served>>,
    fetches: Arc<AtomicUsize>,
}

pub struct JwksServer {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let shared = Shared {
            served: Arc::new(Mutex::new(Served {
                keys,
                mode: Mode::Serve,
            })),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route(JWKS_PATH, get(serve_jwks))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, shared, task }
    }

    pub fn serve(&self, keys: Vec<Value>) {
        self.shared.served.lock().unwrap().keys = keys;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.served.lock().unwrap().mode = mode;
    }

    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    pub fn settings(&self) -> AuthSettings {
        AuthSettings {
            jwks_url: Some(self.url.clone()),
            ..AuthSettings::default()
        }
    }

    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.settings()).unwrap()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(shared): State<Shared>) -> Response {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    let (keys, mode) = {
        let served = shared.served.lock().unwrap();
        (served.keys.clone(), served.mode)
    };
    match mode {
        Mode::Serve => Json(json!({ "keys": keys })).into_response(),
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::Hang => std::future::pending().await,
        Mode::Huge => {
            Json(json!({ "keys": keys, "padding": "x".repeat(70 * 1024) })).into_response()
        }
    }
}

/// Settles quickly enough for any test; only bounds how long a broken test hangs.
pub const DEADLINE: Duration = Duration::from_secs(10);
