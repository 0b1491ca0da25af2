//! Test harness: the real application on port 0 against a private nats-server and a fresh
//! database, and a client that speaks to it like the web app does.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xenios_config::{Overrides, Settings};
use xenios_devstack::NatsServer;
use xenios_store::Store;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const OTHER_API_KEY: &str = "test-api-key-rotated-987654321";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const USER: &str = "11111111-1111-4111-8111-111111111111";
pub const OTHER_USER: &str = "22222222-2222-4222-8222-222222222222";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct Stack {
    pub nats: NatsServer,
    pub db_url: String,
    pub settings: Settings,
    /// The API as the web app reaches it (`stack.base`, `stack.submit(…)`, … through `Deref`).
    pub api: Api,
    pub store: Store,
    pub nats_client: async_nats::Client,
    stop_api: CancellationToken,
    api_task: Option<JoinHandle<()>>,
    workers: Vec<(CancellationToken, JoinHandle<()>)>,
    /// Stopped when the stack is dropped, not with the consumers.
    sweepers: Vec<CancellationToken>,
    _dir: tempfile::TempDir,
}

/// Test settings; `extra` overrides (key, value) pairs on top.
pub fn settings(nats_url: &str, db_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut overrides: Overrides = vec![
        ("api.addr".into(), "127.0.0.1:0".into()),
        ("api.keys".into(), format!("{API_KEY},{OTHER_API_KEY}")),
        ("auth.jwt_secret".into(), JWT_SECRET.into()),
        ("nats.url".into(), nats_url.into()),
        ("database.url".into(), db_url.into()),
        ("database.acquire_timeout_ms".into(), "1500".into()),
        ("consumer.metrics_addr".into(), "127.0.0.1:0".into()),
        ("consumer.retry_delays_ms".into(), "50,100,200".into()),
        ("consumer.shutdown_grace_secs".into(), "5".into()),
        ("consumer.heartbeat_secs".into(), "1".into()),
        ("consumer.pull_expires_ms".into(), "500".into()),
        ("consumer.lease_secs".into(), "6".into()),
        ("log.level".into(), "warn".into()),
    ];
    overrides.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_from(Some(Path::new("/dev/null")), &HashMap::new(), &overrides)
        .expect("test settings are valid")
}

/// The API alone on its own connections, for tests that control the services themselves
/// (stopping a database, production settings). Returns its base URL; it serves until the
/// test ends.
pub async fn serve_api(settings: &Settings) -> String {
    let store = xenios_cli::connect_store(settings).await.unwrap();
    let client = xenios_cli::connect_nats(settings, "test").await.unwrap();
    let app = xenios_api::Application::build(settings.clone(), store, client)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(std::future::pending()));
    base
}

pub async fn database_url(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("xenios.db").display()),
        Db::Postgres => xenios_devstack::test_database_url()
            .await
            .expect("a PostgreSQL test database (run `make test`)"),
    }
}

impl Stack {
    /// API and one in-process consumer runtime.
    pub async fn start(db: Db) -> Stack {
        Stack::start_with(db, &[], 1).await
    }

    pub async fn start_with(db: Db, extra: &[(&str, &str)], workers: usize) -> Stack {
        let nats = NatsServer::start().expect("nats-server starts");
        Stack::start_on(nats, db, extra, workers).await
    }

    /// The stack on a broker the test started (one speaking TLS, say).
    pub async fn start_on(
        nats: NatsServer,
        db: Db,
        extra: &[(&str, &str)],
        workers: usize,
    ) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let db_url = database_url(db, dir.path()).await;
        Stack::start_in(dir, nats, db_url, extra, workers).await
    }

    /// The stack on a database the test set up (one behind a pooler, say).
    pub async fn start_on_database(
        nats: NatsServer,
        db_url: String,
        extra: &[(&str, &str)],
        workers: usize,
    ) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        Stack::start_in(dir, nats, db_url, extra, workers).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        nats: NatsServer,
        db_url: String,
        extra: &[(&str, &str)],
        workers: usize,
    ) -> Stack {
        let settings = settings(&nats.url(), &db_url, extra);
        let store = xenios_cli::connect_store(&settings).await.expect("store");
        let nats_client = xenios_cli::connect_nats(&settings, "test")
            .await
            .expect("nats");
        let mut stack = Stack {
            api: Api::new(String::new()),
            stop_api: CancellationToken::new(),
            api_task: None,
            workers: Vec::new(),
            sweepers: Vec::new(),
            store,
            nats_client,
            nats,
            db_url,
            settings,
            _dir: dir,
        };
        if !stack.settings.nats.apply_streams_on_start {
            // The processes leave the streams alone: the harness applies them, once.
            let js = async_nats::jetstream::new(stack.nats_client.clone());
            xenios_contract::streams::apply(&js, &xenios_cli::stream_settings(&stack.settings))
                .await
                .unwrap();
        }
        stack.wait_for_streams().await;
        stack.start_api().await;
        for _ in 0..workers {
            stack.start_worker().await;
        }
        stack
    }

    async fn wait_for_streams(&self) {
        let js = async_nats::jetstream::new(self.nats_client.clone());
        let desired = xenios_cli::stream_settings(&self.settings);
        eventually(Duration::from_secs(20), || {
            let js = js.clone();
            let desired = desired.clone();
            async move {
                matches!(xenios_contract::streams::check(&js, &desired).await, Ok(d) if d.is_empty())
            }
        })
        .await;
    }

    pub async fn start_api(&mut self) {
        let app = xenios_api::Application::build(
            self.settings.clone(),
            self.store.clone(),
            self.nats_client.clone(),
        )
        .await
        .expect("api builds");
        self.base = format!("http://{}", app.local_addr());
        let stop = CancellationToken::new();
        self.stop_api = stop.clone();
        self.api_task = Some(tokio::spawn(async move {
            app.run(async move { stop.cancelled().await })
                .await
                .unwrap();
        }));
    }

    /// Another consumer runtime in this process (its own NATS connection), serving every
    /// kind this build knows, as `xenios dev` does.
    pub async fn start_worker(&mut self) {
        let client = xenios_cli::connect_nats(&self.settings, "test-worker")
            .await
            .unwrap();
        let runtime =
            xenios_cli::runtime_for(&self.settings, &self.store, &client, "test-worker", &[])
                .expect("the consumer runtime builds");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            runtime
                .run(async move { stopped.cancelled().await })
                .await
                .unwrap();
        });
        self.workers.push((stop, task));
    }

    /// The sweeper (with retention and webhooks) beside the API, as `xenios-api` runs it,
    /// until the stack is dropped.
    pub fn start_sweeper(&mut self) {
        let stop = CancellationToken::new();
        xenios_cli::spawn_sweeper(
            &self.settings,
            &self.store,
            &self.nats_client,
            Default::default(),
            stop.clone(),
        );
        self.sweepers.push(stop);
    }

    /// Stops every in-process consumer gracefully.
    pub async fn stop_workers(&mut self) {
        for (stop, task) in self.workers.drain(..) {
            stop.cancel();
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for Stack {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
}

/// A client of a running API, speaking to it like the web app does (API key and a user's
/// token on every request).
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `DELETE /api/v1/users/{user}/data` as `caller`: the status and the report.
    pub async fn erase_user(&self, caller: &str, user: &str) -> (u16, Value) {
        let url = self.url(&format!("/api/v1/users/{user}/data"));
        let response = self
            .authed(self.http.delete(url), caller)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The Prometheus text of `/metrics` (no authentication, as a scraper sees it).
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn token(&self, user: &str) -> String {
        token_for(user, "authenticated")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.get(self.url(path)), USER)
    }

    /// `GET path` as the test user, its body as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.post(self.url(path)), USER)
    }

    pub fn authed(&self, request: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
        request
            .header("X-API-Key", API_KEY)
            .bearer_auth(self.token(user))
    }

    /// `POST /api/v1/files` as `user`, the file's type declared wrongly on purpose: the API
    /// sniffs it.
    pub async fn upload_as(&self, user: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str("application/x-whatever")
            .unwrap();
        let form = reqwest::multipart::Form::new()
            .text("note", "ignored")
            .part("file", part);
        self.authed(self.http.post(self.url("/api/v1/files")), user)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Submits a job and returns its id (asserting 202).
    pub async fn submit(&self, kind: &str, input: Value) -> String {
        self.submit_as(USER, kind, input).await
    }

    /// [`Stack::submit`] as `user`.
    pub async fn submit_as(&self, user: &str, kind: &str, input: Value) -> String {
        let response = self
            .authed(self.http.post(self.url("/api/v1/jobs")), user)
            .json(&json!({"kind": kind, "input": input}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    /// `POST /api/v1/jobs/{id}/cancel`, whatever it answers.
    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.post(&format!("/api/v1/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        let response = self
            .get(&format!("/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls the job until its status is one of `statuses`.
    pub async fn wait_for(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {} after {within:?}: {job}",
                job["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the job's SSE stream to its end (or `within`).
    pub async fn events(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        within: Duration,
    ) -> Vec<Sse> {
        let mut request = self.get(&format!("/api/v1/jobs/{id}/events"));
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        read_sse(response, within).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_api.cancel();
        for (stop, _) in &self.workers {
            stop.cancel();
        }
        for stop in &self.sweepers {
            stop.cancel();
        }
    }
}

pub fn token_for(user: &str, role: &str) -> String {
    xenios_auth::mint_hs256(
        JWT_SECRET,
        user,
        role,
        Some("user@example.com"),
        "authenticated",
        Duration::from_secs(600),
    )
    .unwrap()
}

/// A user's token whose `app_metadata` is `app_metadata` (a plan's settings, as Supabase's
/// admin API writes them).
pub fn token_with_app_metadata(user: &str, app_metadata: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user, "role": "authenticated", "aud": "authenticated",
        "iat": now, "exp": now + 600, "app_metadata": app_metadata,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Parses an SSE response until the server ends it or `within` passes.
pub async fn read_sse(response: reqwest::Response, within: Duration) -> Vec<Sse> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut current = Sse::default();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_owned();
            buffer.drain(..=end);
            if line.is_empty() {
                if current.event.is_some() || !current.data.is_empty() {
                    events.push(std::mem::take(&mut current));
                }
            } else if let Some(v) = line.strip_prefix("id:") {
                current.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("event:") {
                current.event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !current.data.is_empty() {
                    current.data.push('\n');
                }
                current.data.push_str(v.trim_start());
            }
        }
    }
    events
}

/// Which write of a job a test has the database refuse.
#[derive(Clone, Copy)]
pub enum JobWrite {
    /// Its record (`INSERT`).
    Record,
    /// Any change to it once recorded (`UPDATE`): its attempts, its outcome.
    Change,
    /// Its removal (`DELETE`): a refused submission taken back.
    Removal,
}

impl JobWrite {
    /// The trigger's name, the statement it refuses, and the row it looks at.
    fn trigger(self) -> (&'static str, &'static str, &'static str) {
        match self {
            JobWrite::Record => ("refuse_job", "INSERT", "NEW"),
            JobWrite::Change => ("refuse_job_update", "UPDATE", "NEW"),
            JobWrite::Removal => ("refuse_job_delete", "DELETE", "OLD"),
        }
    }
}

/// Has the stack's SQLite database refuse `write` of a job whose input holds `value` at
/// `json_path` (as `json_extract` names it), as a database that fails a write would, until
/// `stop_refusing`.
pub async fn refuse_jobs_with(db_url: &str, write: JobWrite, json_path: &str, value: &str) {
    let (name, statement, row) = write.trigger();
    let db = sqlx::SqlitePool::connect(db_url).await.unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER {name} BEFORE {statement} ON jobs \
         WHEN json_extract({row}.input, '{json_path}') = '{value}' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ))
    .execute(&db)
    .await
    .unwrap();
}

pub async fn stop_refusing(db_url: &str, write: JobWrite) {
    let (name, _, _) = write.trigger();
    let db = sqlx::SqlitePool::connect(db_url).await.unwrap();
    sqlx::query(&format!("DROP TRIGGER {name}"))
        .execute(&db)
        .await
        .unwrap();
}

/// Waits until `check` holds, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the SPEC error body and returns it.
pub async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(response.headers().contains_key("x-correlation-id"));
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["request_id"].as_str().is_some(), "{body}");
    assert!(body["error"].get("details").is_some(), "{body}");
    body
}
