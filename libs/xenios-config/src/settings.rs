use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn is_production(self) -> bool {
        self == Environment::Production
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub consumer: ConsumerSettings,
    pub jobs: JobsSettings,
    pub files: FilesSettings,
    pub fetch: FetchSettings,
    pub providers: ProvidersSettings,
    pub llm: crate::LlmSettings,
    pub retention: RetentionSettings,
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A level (`info`) or a `RUST_LOG`-style directive list (`info,xenios_api=debug`).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; may hold a password, so it is shown redacted.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Connections for reads and single-row writes. On PostgreSQL the batched and the lazy
    /// writes keep five more of their own.
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub migrate_on_start: bool,
    /// SQLite: `full` syncs every commit before it is answered (a job answered 202 survives a
    /// power loss); `normal` syncs at checkpoints only (it survives the process crashing, not
    /// the machine).
    pub sqlite_synchronous: String,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/xenios.db".into(),
            max_connections: 10,
            acquire_timeout_ms: 3000,
            migrate_on_start: true,
            sqlite_synchronous: "full".into(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// Comma-separated server URLs; may hold a user's password or a token, so they are shown
    /// redacted.
    #[serde(
        deserialize_with = "comma_list",
        serialize_with = "serialize_redacted_urls"
    )]
    pub url: Vec<String>,
    pub creds: Option<String>,
    /// TLS towards the brokers beyond what a `tls://` URL alone gives (the system's trust
    /// store, no client certificate): the CA that signed the servers' certificates (a private
    /// CA), and the certificate and key this process presents where the servers verify
    /// clients. Setting any of them requires TLS of every server, whatever the URL's scheme.
    pub tls_ca_file: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Stream replicas: 3 on a three-node cluster.
    pub replicas: usize,
    pub jobs_max_msgs: i64,
    pub jobs_max_bytes: i64,
    pub events_max_age_secs: u64,
    pub dlq_max_age_secs: u64,
    pub request_timeout_ms: u64,
    /// Create or update the streams from `streams/` at start.
    pub apply_streams_on_start: bool,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.url.iter().map(|u| crate::redact_url(u)).collect();
        f.debug_struct("NatsSettings")
            .field("url", &urls)
            .field("creds", &self.creds)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("replicas", &self.replicas)
            .field("jobs_max_msgs", &self.jobs_max_msgs)
            .field("jobs_max_bytes", &self.jobs_max_bytes)
            .field("events_max_age_secs", &self.events_max_age_secs)
            .field("dlq_max_age_secs", &self.dlq_max_age_secs)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("apply_streams_on_start", &self.apply_streams_on_start)
            .finish()
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: vec!["nats://127.0.0.1:4222".into()],
            creds: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            replicas: 1,
            jobs_max_msgs: 100_000,
            jobs_max_bytes: 1 << 30,
            events_max_age_secs: 3600,
            dlq_max_age_secs: 14 * 24 * 3600,
            request_timeout_ms: 5000,
            apply_streams_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub addr: SocketAddr,
    /// The keys the web app sends in `X-API-Key`; several while rotating.
    #[serde(deserialize_with = "comma_list_secrets")]
    pub keys: Vec<Secret>,
    #[serde(deserialize_with = "comma_list")]
    pub cors_origins: Vec<String>,
    /// JSON request bodies; uploads have their own limit (`files.max_bytes`).
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Event streams (job events, LLM streams) one instance keeps open at once; past it a new
    /// one is answered 503 with `Retry-After`.
    pub max_sse_clients: usize,
    /// Of those, the ones one user may hold (a `service_role` caller, and a caller with the
    /// API key alone, are bounded by `max_sse_clients` only); past it, 429.
    pub max_sse_clients_per_user: usize,
    pub shutdown_grace_secs: u64,
    pub sse_keepalive_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            addr: SocketAddr::from(([0, 0, 0, 0], 8000)),
            keys: Vec::new(),
            cors_origins: Vec::new(),
            body_limit_bytes: 1 << 20,
            request_timeout_secs: 60,
            max_sse_clients: 10_000,
            max_sse_clients_per_user: 1_000,
            shutdown_grace_secs: 20,
            sse_keepalive_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: Option<Secret>,
    pub supabase_url: Option<String>,
    pub audience: String,
    pub leeway_secs: u64,
    pub jwks_cache_ttl_secs: u64,
    pub jwks_min_refetch_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwt_secret: None,
            supabase_url: None,
            audience: "authenticated".into(),
            leeway_secs: 30,
            jwks_cache_ttl_secs: 600,
            jwks_min_refetch_secs: 30,
        }
    }
}

impl AuthSettings {
    pub fn jwks_url(&self) -> Option<String> {
        self.supabase_url
            .as_ref()
            .map(|u| format!("{}/auth/v1/.well-known/jwks.json", u.trim_end_matches('/')))
    }
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Per user (or per API key when no user) on the job routes.
    pub jobs: Bucket,
    /// Per user (or per API key) on the LLM routes.
    pub llm: Bucket,
    /// Per API key over all routes: the web app's whole allowance.
    pub per_key: Bucket,
    /// Per user over all routes: so that one user's reads (a tight poll of a job) cannot
    /// spend the allowance of the key every user of the web app shares.
    pub per_user: Bucket,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            jobs: Bucket {
                per_second: 50,
                burst: 200,
            },
            llm: Bucket {
                per_second: 10,
                burst: 40,
            },
            per_key: Bucket {
                per_second: 5000,
                burst: 10000,
            },
            per_user: Bucket {
                per_second: 1000,
                burst: 2000,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    pub metrics_addr: SocketAddr,
    /// Serve `jobs.echo` besides the binary's own kind.
    pub serve_echo: bool,
    pub shutdown_grace_secs: u64,
    pub heartbeat_secs: u64,
    /// How long after submission a still-queued job is published again by the sweeper.
    pub sweeper_delay_secs: u64,
    pub sweeper_interval_secs: u64,
    /// A running job whose lease nobody renewed for this long has lost its consumer, and the
    /// broker will not deliver its command again: the sweeper queues it again, or fails it
    /// once it has had `max_attempts` tries.
    pub abandoned_after_secs: u64,
    /// Delays before each retry after a transient failure (jittered by up to a fifth); the
    /// last entry repeats. `"100,500"` in the environment.
    #[serde(deserialize_with = "comma_list_numbers")]
    pub retry_delays_ms: Vec<u64>,
    /// Tries per job, counting the first; at most the consumer's `max_deliver`.
    pub max_attempts: u32,
    /// How long one pull request waits for work before it is renewed.
    pub pull_expires_ms: u64,
    /// A running job is held by its consumer for this long past the last renewal (renewed
    /// three times per lease); another delivery of its command meanwhile waits instead of
    /// running it twice. Below the consumers' 30 s `ack_wait`: the broker redelivers a crashed
    /// consumer's command 30 s after its last in-progress ack, and that delivery must find the
    /// lease lapsed, or it is turned away and spends one of the command's deliveries.
    pub lease_secs: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9100)),
            serve_echo: true,
            shutdown_grace_secs: 25,
            heartbeat_secs: 5,
            sweeper_delay_secs: 60,
            sweeper_interval_secs: 15,
            abandoned_after_secs: 300,
            retry_delays_ms: vec![1000, 5000, 15000, 30000],
            max_attempts: 5,
            pull_expires_ms: 2000,
            lease_secs: 20,
        }
    }
}

/// How long the database keeps what it no longer needs; 0 keeps it for ever. The sweeper
/// beside each API deletes what has expired.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Finished jobs (succeeded, failed, cancelled), counted from their submission; their
    /// `Idempotency-Key`s go with them.
    pub jobs_days: u32,
    /// Rows of `inference_logs`, the audit trail of LLM calls.
    pub inference_logs_days: u32,
    /// Cached extractions, counted from their last use.
    pub extraction_cache_days: u32,
    /// How often the sweeper looks for expired rows.
    pub interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            jobs_days: 30,
            inference_logs_days: 365,
            extraction_cache_days: 30,
            interval_secs: 600,
        }
    }
}

/// Jobs submitted with a `webhook_url` are announced there when they finish: a signed POST,
/// tried again with backoff until the receiver answers 2xx.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// The HMAC-SHA256 key of each delivery's `Xenios-Signature`; without it a job asking
    /// for a webhook is refused.
    pub secret: Option<Secret>,
    /// Tries per delivery, the first included; then it is given up as failed.
    pub max_attempts: u32,
    /// One try's limit, the receiver's answer included.
    pub timeout_secs: u64,
    /// The wait before the second try; doubled for each later one, up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How often each API looks for deliveries that are due besides those it learns of (a job
    /// it submitted finishing, a redelivery asked of it or of the CLI, a job the CLI submitted
    /// again, a retry it scheduled): jobs submitted through another instance, watches missed.
    pub poll_interval_ms: u64,
    /// The largest body sent; past it the job's `result` is left out (`result_omitted`) and
    /// the receiver reads it with `GET /api/v1/jobs/{id}`.
    pub max_body_bytes: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secret: None,
            max_attempts: 8,
            timeout_secs: 10,
            initial_backoff_ms: 10_000,
            max_backoff_ms: 3_600_000,
            poll_interval_ms: 1_000,
            max_body_bytes: 1 << 20,
        }
    }
}

/// Limits of one job kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindSettings {
    /// Handlers of this kind running at once in one process.
    pub concurrency: usize,
    /// At the soft limit the handler is cancelled and the attempt fails as `timeout`.
    pub soft_limit_secs: u64,
    /// At the hard limit the attempt is abandoned.
    pub hard_limit_secs: u64,
}

impl Default for KindSettings {
    fn default() -> Self {
        KindSettings {
            concurrency: 8,
            soft_limit_secs: 300,
            hard_limit_secs: 600,
        }
    }
}

impl KindSettings {
    pub fn soft_limit(&self) -> Duration {
        Duration::from_secs(self.soft_limit_secs)
    }
    pub fn hard_limit(&self) -> Duration {
        Duration::from_secs(self.hard_limit_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSettings {
    pub transcription: KindSettings,
    pub extraction: KindSettings,
    pub llm: KindSettings,
    pub echo: KindSettings,
    /// Largest accepted `input` document, in bytes of JSON.
    pub max_input_bytes: usize,
}

impl Default for JobsSettings {
    fn default() -> Self {
        JobsSettings {
            transcription: KindSettings::default(),
            extraction: KindSettings::default(),
            llm: KindSettings {
                concurrency: 64,
                ..KindSettings::default()
            },
            echo: KindSettings {
                concurrency: 64,
                ..KindSettings::default()
            },
            max_input_bytes: 256 * 1024,
        }
    }
}

impl JobsSettings {
    /// Limits by kind name (`transcription`, `extraction`, `llm`, `echo`).
    pub fn kind(&self, kind: &str) -> Option<&KindSettings> {
        match kind {
            "transcription" => Some(&self.transcription),
            "extraction" => Some(&self.extraction),
            "llm" => Some(&self.llm),
            "echo" => Some(&self.echo),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesSettings {
    pub max_bytes: u64,
    /// All uploads kept together (the `FILES` object store's stream): past it an upload is
    /// refused (503) until older files expire, so uploads cannot take the broker's disk from
    /// the job streams.
    pub max_total_bytes: u64,
    pub ttl_secs: u64,
    /// An upload whose client sends nothing for this long is refused and what it stored
    /// deleted: a client trickling its body would otherwise hold its connection and a partial
    /// file for ever (uploads are outside `api.request_timeout_secs`).
    pub upload_idle_timeout_secs: u64,
    /// The longest one upload may take, however steadily its bytes come: a trickle just fast
    /// enough for the idle limit is still bounded.
    pub upload_timeout_secs: u64,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings {
            max_bytes: 200 * 1000 * 1000,
            max_total_bytes: 10 * 1000 * 1000 * 1000,
            ttl_secs: 24 * 3600,
            upload_idle_timeout_secs: 30,
            // 200 MB at about 1 Mbit/s.
            upload_timeout_secs: 1800,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchSettings {
    /// Hosts that `url` inputs may reach although they resolve to private addresses.
    #[serde(deserialize_with = "comma_list")]
    pub allow_hosts: Vec<String>,
    pub max_bytes: u64,
    pub timeout_secs: u64,
    pub max_redirects: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            allow_hosts: Vec::new(),
            max_bytes: 200 * 1000 * 1000,
            timeout_secs: 120,
            max_redirects: 5,
        }
    }
}

/// One outside provider: where it is and the key it wants.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    pub api_key: Option<Secret>,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersSettings {
    pub openrouter: ProviderSettings,
    pub anthropic: ProviderSettings,
    pub openai: ProviderSettings,
    pub deepgram: ProviderSettings,
    /// A docling-serve instance; off when unset.
    pub docling_url: Option<String>,
    /// Extra provider settings keyed by name, for routing tables added in configuration.
    pub extra: BTreeMap<String, ProviderSettings>,
}

/// Accepts `"a,b"` (as environment variables give it) or a list (as TOML gives it).
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

fn comma_list_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumbers {
        Text(String),
        Numbers(Vec<u64>),
    }
    match TextOrNumbers::deserialize(d)? {
        TextOrNumbers::Numbers(v) => Ok(v),
        TextOrNumbers::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(serde::de::Error::custom))
            .collect(),
    }
}

fn comma_list_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(comma_list(d)?.into_iter().map(Secret::new).collect())
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::redact_url(url))
}

fn serialize_redacted_urls<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|url| crate::redact_url(url)))
}
