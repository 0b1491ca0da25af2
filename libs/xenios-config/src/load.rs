use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment as EnvSource, File, FileFormat};

use crate::{Environment, KindSettings, Settings};

/// The environment names of the original deployment and the keys they set (SPEC §2). The
/// `Optional` ones have no value by default: set but empty (`SUPABASE_URL=` in a compose
/// `.env`, a blank Ansible variable) they stay unset, as a deployment tool's blank line means.
/// An empty `Required` one is still refused, so `DATABASE_URL=` never falls back to SQLite.
const LEGACY_ENV: &[(&str, &str, Presence)] = &[
    ("ENVIRONMENT", "environment", Required),
    ("DATABASE_URL", "database.url", Required),
    ("NATS_URL", "nats.url", Required),
    ("NATS_CREDS", "nats.creds", Optional),
    ("XENIOS_BACKEND_API_KEY", "api.keys", Optional),
    ("SUPABASE_JWT_SECRET", "auth.jwt_secret", Optional),
    ("SUPABASE_URL", "auth.supabase_url", Optional),
    (
        "OPENROUTER_API_KEY",
        "providers.openrouter.api_key",
        Optional,
    ),
    ("ANTHROPIC_API_KEY", "providers.anthropic.api_key", Optional),
    ("OPENAI_API_KEY", "providers.openai.api_key", Optional),
    ("DEEPGRAM_API_KEY", "providers.deepgram.api_key", Optional),
    (
        "OPENROUTER_BASE_URL",
        "providers.openrouter.base_url",
        Optional,
    ),
    (
        "ANTHROPIC_BASE_URL",
        "providers.anthropic.base_url",
        Optional,
    ),
    ("OPENAI_BASE_URL", "providers.openai.base_url", Optional),
    ("DEEPGRAM_BASE_URL", "providers.deepgram.base_url", Optional),
    ("DOCLING_URL", "providers.docling_url", Optional),
    ("XENIOS_API_ADDR", "api.addr", Required),
    ("XENIOS_METRICS_ADDR", "consumer.metrics_addr", Required),
    ("XENIOS_FETCH_ALLOW_HOSTS", "fetch.allow_hosts", Optional),
    ("CORS_ORIGINS", "api.cors_origins", Optional),
];

#[derive(Clone, Copy, PartialEq)]
enum Presence {
    Required,
    Optional,
}
use Presence::{Optional, Required};

/// Configuration that failed: one line naming the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration error: {0}")]
    Parse(String),
    #[error("configuration error: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Values set by the program itself (for example `xenios dev`), applied after everything else.
pub type Overrides = Vec<(String, String)>;

impl Settings {
    /// Loads from `config_file` (else `XENIOS_CONFIG`, else `./xenios.toml` if present) and the
    /// process environment, then validates.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Settings::load_from(config_file, &env, &Overrides::new())
    }

    /// Like [`Settings::load`] with an explicit environment, for tests and embedding.
    pub fn load_from(
        config_file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut builder = Config::builder();

        let explicit = config_file
            .map(Path::to_path_buf)
            .or_else(|| env.get("XENIOS_CONFIG").map(PathBuf::from));
        match explicit {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
            }
            None => {
                builder =
                    builder.add_source(File::new("xenios.toml", FileFormat::Toml).required(false));
            }
        }

        let prefixed: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("XENIOS__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            EnvSource::with_prefix("XENIOS")
                .prefix_separator("__")
                .separator("__")
                .source(Some(prefixed)),
        );

        let log_level = env.get("LOG_LEVEL").or_else(|| env.get("RUST_LOG"));
        let legacy = LEGACY_ENV
            .iter()
            .filter_map(|(name, key, presence)| {
                let value = env.get(*name)?;
                let blank = value.trim().is_empty();
                (!(blank && *presence == Optional)).then_some((*key, value))
            })
            .chain(log_level.map(|v| ("log.level", v)));
        for (key, value) in legacy {
            builder = builder
                .set_override(key, value.as_str())
                .map_err(|e| ConfigError::Parse(e.to_string()))?;
        }
        for (key, value) in overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| ConfigError::Parse(e.to_string()))?;
        }

        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError::Parse(one_line(&e.to_string())))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate_nats_tls(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
        if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "nats.tls_cert_file",
                problem: "goes with nats.tls_key_file: set both, or neither".into(),
            });
        }
        if let Some(path) = &n.creds {
            check_creds(path)?;
        }
        if let Some(path) = &n.tls_ca_file {
            check_pem("nats.tls_ca_file", path, Pem::Certificates)?;
        }
        if let Some(path) = &n.tls_cert_file {
            check_pem("nats.tls_cert_file", path, Pem::Certificates)?;
        }
        if let Some(path) = &n.tls_key_file {
            check_pem("nats.tls_key_file", path, Pem::PrivateKey)?;
        }
        Ok(())
    }

    /// Checks what types alone cannot say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.environment != Environment::Development && self.api.keys.is_empty() {
            return invalid(
                "XENIOS_BACKEND_API_KEY (api.keys)",
                "required in staging and production",
            );
        }
        if self.api.keys.iter().any(|k| k.expose().len() < 16) {
            return invalid(
                "XENIOS_BACKEND_API_KEY (api.keys)",
                "every key must be at least 16 characters",
            );
        }
        let db = &self.database.url;
        if !["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|p| db.starts_with(p))
        {
            return invalid(
                "DATABASE_URL (database.url)",
                "must start with postgres://, postgresql:// or sqlite:",
            );
        }
        if is_supabase_transaction_pooler(db) {
            return invalid(
                "DATABASE_URL (database.url)",
                "points at Supabase's transaction pooler (port 6543), which hands each \
                 transaction to any server connection, while the store keeps its settings and \
                 prepared statements per connection: use the session pooler (the same host, \
                 port 5432) or the direct connection",
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if !matches!(self.database.sqlite_synchronous.as_str(), "full" | "normal") {
            return invalid("database.sqlite_synchronous", "full or normal");
        }
        if self.nats.url.is_empty() {
            return invalid("NATS_URL (nats.url)", "no server given");
        }
        if let Some(bad) = self.nats.url.iter().find(|u| !valid_nats_url(u)) {
            return Err(ConfigError::Invalid {
                key: "NATS_URL (nats.url)",
                problem: format!(
                    "`{}` is not a nats://, tls:// or host:port address",
                    crate::redact_url(bad)
                ),
            });
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return invalid("nats.replicas", "must be between 1 and 5");
        }
        self.validate_nats_tls()?;
        if let Some(url) = &self.auth.supabase_url {
            let host = ["https://", "http://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme))
                .and_then(|rest| rest.split(['/', '?', '#']).next())
                .unwrap_or("");
            if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "SUPABASE_URL (auth.supabase_url)",
                    "must be an http(s) URL with a host",
                );
            }
        }
        // Checked here, not only where the API builds its verifier: the key is named, and
        // every process (consumers, `xenios config show`) refuses the same settings.
        if self
            .auth
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            return invalid(
                "SUPABASE_JWT_SECRET (auth.jwt_secret)",
                "is empty: unset it, or give the secret",
            );
        }
        if self.auth.audience.trim().is_empty() {
            return invalid(
                "auth.audience",
                "must not be empty (Supabase's tokens say `authenticated`)",
            );
        }
        for (key, bucket) in [
            ("rate_limit.jobs", self.rate_limit.jobs),
            ("rate_limit.llm", self.rate_limit.llm),
            ("rate_limit.per_key", self.rate_limit.per_key),
            ("rate_limit.per_user", self.rate_limit.per_user),
        ] {
            if bucket.per_second == 0 || bucket.burst == 0 {
                return invalid(key, "per_second and burst must be at least 1");
            }
        }
        for (key, kind) in [
            ("jobs.transcription", &self.jobs.transcription),
            ("jobs.extraction", &self.jobs.extraction),
            ("jobs.llm", &self.jobs.llm),
            ("jobs.echo", &self.jobs.echo),
        ] {
            validate_kind(key, kind)?;
        }
        if self.consumer.retry_delays_ms.is_empty() {
            return invalid("consumer.retry_delays_ms", "give at least one delay");
        }
        if self.consumer.retry_delays_ms.iter().any(|d| *d > 3_600_000) {
            return invalid("consumer.retry_delays_ms", "each delay at most an hour");
        }
        if !(1..=5).contains(&self.consumer.max_attempts) {
            return invalid(
                "consumer.max_attempts",
                "between 1 and 5 (the consumers' max_deliver)",
            );
        }
        // Every process that takes LLM jobs checks the routing table, the API included: it
        // accepts `llm` jobs by task name.
        self.llm.validate().map_err(ConfigError::Parse)?;
        if let Some(problem) = cors_origins_problem(&self.api.cors_origins) {
            return Err(ConfigError::Invalid {
                key: "CORS_ORIGINS (api.cors_origins)",
                problem,
            });
        }
        if !(3..CONSUMER_ACK_WAIT_SECS).contains(&self.consumer.lease_secs) {
            return invalid(
                "consumer.lease_secs",
                "between 3 and 29: below the consumers' 30 s ack_wait, so the redelivery \
                 after a crash finds the job's lease lapsed",
            );
        }
        if self.consumer.abandoned_after_secs < CONSUMER_ACK_WAIT_SECS + self.consumer.lease_secs {
            return invalid(
                "consumer.abandoned_after_secs",
                "at least the consumers' 30 s ack_wait plus consumer.lease_secs: before that, \
                 the broker's own redelivery takes the job up",
            );
        }
        if !(1..=WORKERS_TTL_SECS / 3).contains(&self.consumer.heartbeat_secs) {
            return invalid(
                "consumer.heartbeat_secs",
                "between 1 and 10: three heartbeats within the WORKERS bucket's 30 s TTL, or a \
                 live consumer drops out of the listing between them",
            );
        }
        if self.files.max_total_bytes < self.files.max_bytes
            || i64::try_from(self.files.max_total_bytes).is_err()
        {
            return invalid(
                "files.max_total_bytes",
                "at least files.max_bytes (one upload must fit)",
            );
        }
        if self.files.upload_idle_timeout_secs == 0
            || self.files.upload_idle_timeout_secs > self.files.upload_timeout_secs
        {
            return invalid(
                "files.upload_idle_timeout_secs",
                "at least 1 and at most files.upload_timeout_secs",
            );
        }
        for (key, days) in [
            ("retention.jobs_days", self.retention.jobs_days),
            (
                "retention.inference_logs_days",
                self.retention.inference_logs_days,
            ),
            (
                "retention.extraction_cache_days",
                self.retention.extraction_cache_days,
            ),
        ] {
            if days > MAX_RETENTION_DAYS {
                return invalid(key, "at most 36500 days (0 keeps rows for ever)");
            }
        }
        if !(1..=86_400).contains(&self.retention.interval_secs) {
            return invalid("retention.interval_secs", "between 1 and 86400");
        }
        let hooks = &self.webhooks;
        if hooks
            .secret
            .as_ref()
            .is_some_and(|s| s.expose().trim().len() < 16)
        {
            return invalid("webhooks.secret", "at least 16 characters when set");
        }
        if !(1..=50).contains(&hooks.max_attempts) {
            return invalid("webhooks.max_attempts", "between 1 and 50");
        }
        if !(1..=300).contains(&hooks.timeout_secs) {
            return invalid("webhooks.timeout_secs", "between 1 and 300");
        }
        if hooks.initial_backoff_ms == 0
            || hooks.initial_backoff_ms > hooks.max_backoff_ms
            || hooks.max_backoff_ms > 7 * 86_400_000
        {
            return invalid(
                "webhooks.initial_backoff_ms",
                "at least 1 and at most webhooks.max_backoff_ms (itself at most a week)",
            );
        }
        if !(10..=60_000).contains(&hooks.poll_interval_ms) {
            return invalid("webhooks.poll_interval_ms", "between 10 and 60000");
        }
        if hooks.max_body_bytes < 4096 {
            return invalid("webhooks.max_body_bytes", "at least 4096");
        }
        if self.api.max_sse_clients == 0 {
            return invalid("api.max_sse_clients", "must be at least 1");
        }
        if self.api.body_limit_bytes == 0 {
            return invalid("api.body_limit_bytes", "must be positive");
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn show(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Pieces of PEM a TLS setting must hold.
enum Pem {
    Certificates,
    PrivateKey,
}

/// Supabase's pooler serves both modes on one host: sessions on 5432, transactions on 6543.
fn is_supabase_transaction_pooler(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.rsplit_once(':').is_some_and(|(host, port)| {
        port == "6543" && host.to_ascii_lowercase().ends_with(".pooler.supabase.com")
    })
}

/// A credentials file as `nsc`, the `nats` CLI and Synadia Cloud write it: the user's JWT, then
/// the user's seed, each on a line between two dashed lines. Checked here so that a wrong path
/// stops the process at start naming the setting, rather than as a connection error.
fn check_creds(path: &str) -> Result<(), ConfigError> {
    let key = "NATS_CREDS (nats.creds)";
    let invalid = |problem: String| Err(ConfigError::Invalid { key, problem });
    if path.trim().is_empty() {
        return invalid("is empty: unset it, or give the file's path".into());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return invalid(format!("`{path}`: cannot read it: {e}")),
    };
    // Read as the client reads it (`xenios_contract::client`): the first two tokens between
    // dashed lines. A JWT's header is base64 JSON (`eyJ`); a user's nkey seed starts `SU`.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut tokens = lines
        .windows(3)
        .filter(|w| w[0].starts_with("---") && w[2].starts_with("---"))
        .map(|w| w[1]);
    let (jwt, seed) = (tokens.next(), tokens.next());
    if !(jwt.is_some_and(|t| t.starts_with("eyJ")) && seed.is_some_and(|t| t.starts_with("SU"))) {
        return invalid(format!(
            "`{path}` is not a NATS credentials file: it wants a user JWT and a user seed, each \
             between dashed lines"
        ));
    }
    Ok(())
}

/// Reads a TLS file the way the NATS client will, at start: a wrong path, or a key where the
/// certificate belongs, then stops the process with its setting named, instead of leaving it
/// retrying the broker with a TLS error in its log.
fn check_pem(key: &'static str, path: &str, expected: Pem) -> Result<(), ConfigError> {
    use rustls_pki_types::pem::{Error as PemError, PemObject};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |problem: String| ConfigError::Invalid {
        key,
        problem: format!("`{path}`: {problem}"),
    };
    if path.trim().is_empty() {
        return Err(ConfigError::Invalid {
            key,
            problem: "is empty: unset it, or give the file's path".into(),
        });
    }
    let found = match expected {
        Pem::Certificates => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map(|certs| !certs.is_empty()),
        Pem::PrivateKey => match PrivateKeyDer::from_pem_file(path) {
            Ok(_) => Ok(true),
            Err(PemError::NoItemsFound) => Ok(false),
            Err(e) => Err(e),
        },
    };
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err(invalid(match expected {
            Pem::Certificates => "holds no PEM certificate".into(),
            Pem::PrivateKey => "holds no PEM private key".into(),
        })),
        Err(PemError::Io(e)) => Err(invalid(format!("cannot read it: {e}"))),
        Err(e) => Err(invalid(format!("not valid PEM: {e}"))),
    }
}

fn validate_kind(key: &'static str, kind: &KindSettings) -> Result<(), ConfigError> {
    if kind.concurrency == 0 {
        return Err(ConfigError::Invalid {
            key,
            problem: "concurrency must be at least 1".into(),
        });
    }
    if kind.soft_limit_secs == 0 || kind.soft_limit_secs > kind.hard_limit_secs {
        return Err(ConfigError::Invalid {
            key,
            problem: "soft_limit_secs must be positive and at most hard_limit_secs".into(),
        });
    }
    if kind.hard_limit_secs > MAX_LIMIT_SECS {
        return Err(ConfigError::Invalid {
            key,
            problem: format!("hard_limit_secs must be at most {MAX_LIMIT_SECS} (a week)"),
        });
    }
    Ok(())
}

/// The longest time limit a kind may have: a deadline computed from "now" must not overflow
/// the clock.
const MAX_LIMIT_SECS: u64 = 7 * 24 * 3600;
/// `max_age` of the `WORKERS` bucket's entries (`xenios_contract::streams`).
const WORKERS_TTL_SECS: u64 = 30;
/// A hundred years: longer is a mistake (days taken for seconds), not a policy.
const MAX_RETENTION_DAYS: u32 = 36_500;
/// `ack_wait` of every consumer in `streams/consumers/`.
const CONSUMER_ACK_WAIT_SECS: u64 = 30;

fn valid_nats_url(url: &str) -> bool {
    match url.split_once("://") {
        // Not ws:// nor wss://: the client is built without WebSocket support.
        Some((scheme, rest)) => matches!(scheme, "nats" | "tls") && !rest.is_empty(),
        None => url.contains(':'),
    }
}

/// Browsers send `Origin` as `scheme://host[:port]` and compare it byte for byte: an entry with
/// a path or a trailing slash would never match, so it is refused rather than ignored.
fn cors_origins_problem(origins: &[String]) -> Option<String> {
    if origins.iter().any(|o| o == "*") {
        return (origins.len() > 1)
            .then(|| "`*` allows every origin and cannot be combined with others".to_owned());
    }
    origins.iter().find_map(|origin| {
        let valid = origin.split_once("://").is_some_and(|(scheme, authority)| {
            matches!(scheme, "http" | "https")
                && !authority.is_empty()
                && !authority.contains(['/', '?', '#', '@'])
                && !origin
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
        (!valid).then(|| {
            format!("`{origin}` is not an origin: give scheme://host[:port] (no path), or *")
        })
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(Some(Path::new("/dev/null")), &env(pairs), &Overrides::new())
    }

    #[test]
    fn defaults_are_the_embedded_stack() {
        let s = load(&[]).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.database.url, "sqlite://data/xenios.db");
        assert_eq!(s.nats.url, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(s.api.addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.consumer.metrics_addr.to_string(), "0.0.0.0:9100");
        assert_eq!(s.jobs.echo.soft_limit_secs, 300);
        assert_eq!(s.jobs.echo.hard_limit_secs, 600);
        assert_eq!(s.log.level, "info");
    }

    #[test]
    fn layers_file_then_prefixed_env_then_legacy_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("xenios.toml");
        std::fs::write(
            &file,
            "[api]\naddr = \"127.0.0.1:9001\"\n[database]\nmax_connections = 3\nurl = \"sqlite://file.db\"\n[jobs.echo]\nsoft_limit_secs = 5\n",
        )
        .unwrap();
        let e = env(&[
            ("XENIOS__DATABASE__MAX_CONNECTIONS", "7"),
            ("XENIOS__JOBS__ECHO__HARD_LIMIT_SECS", "9"),
            ("DATABASE_URL", "postgres://u:p@localhost/db"),
            (
                "XENIOS_BACKEND_API_KEY",
                "key-one-0123456789, key-two-0123456789",
            ),
            ("CORS_ORIGINS", "https://app.xenios.example"),
            ("NATS_URL", "nats://a:4222,nats://b:4222"),
            ("LOG_LEVEL", "debug,hyper=warn"),
        ]);
        let s = Settings::load_from(Some(&file), &e, &Overrides::new()).unwrap();
        assert_eq!(s.api.addr.to_string(), "127.0.0.1:9001"); // file
        assert_eq!(s.database.max_connections, 7); // env beats file
        assert_eq!(s.database.url, "postgres://u:p@localhost/db"); // legacy env beats file
        assert_eq!(s.jobs.echo.soft_limit_secs, 5);
        assert_eq!(s.jobs.echo.hard_limit_secs, 9);
        assert_eq!(s.api.keys.len(), 2);
        assert_eq!(s.api.keys[1].expose(), "key-two-0123456789");
        assert_eq!(s.api.cors_origins, vec!["https://app.xenios.example"]);
        assert_eq!(s.nats.url, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(s.log.level, "debug,hyper=warn");
    }

    #[test]
    fn retention_is_days_and_zero_keeps_for_ever() {
        let s = load(&[]).unwrap();
        assert_eq!(
            (s.retention.jobs_days, s.retention.inference_logs_days),
            (30, 365)
        );
        let s = load(&[
            ("XENIOS__RETENTION__JOBS_DAYS", "0"),
            ("XENIOS__RETENTION__EXTRACTION_CACHE_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(s.retention.jobs_days, 0);
        assert_eq!(s.retention.extraction_cache_days, 7);
        for (key, bad) in [
            ("XENIOS__RETENTION__JOBS_DAYS", "86400"),
            ("XENIOS__RETENTION__INFERENCE_LOGS_DAYS", "-1"),
            ("XENIOS__RETENTION__INTERVAL_SECS", "0"),
        ] {
            let err = load(&[(key, bad)]).unwrap_err().to_string();
            assert!(err.contains("retention."), "{key}={bad}: {err}");
        }
    }

    /// The URLs Supabase's dashboard gives: only the transaction pooler's is refused.
    #[test]
    fn supabases_transaction_pooler_is_refused_and_its_session_pooler_taken() {
        let pooler = "aws-0-eu-central-1.pooler.supabase.com";
        let url = |host: &str, port: u16| {
            format!("postgres://postgres.abcdefghij:pa%3Ass@{host}:{port}/postgres?sslmode=require")
        };
        let err = load(&[("DATABASE_URL", &url(pooler, 6543))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL (database.url)"), "{err}");
        assert!(err.contains("session pooler"), "{err}");
        assert!(!err.contains("pa%3Ass"), "the password is echoed: {err}");
        for taken in [
            url(pooler, 5432),
            url("db.abcdefghij.supabase.co", 5432),
            url("db.example.com", 6543),
        ] {
            load(&[("DATABASE_URL", &taken)]).unwrap();
        }
    }

    #[test]
    fn xenios_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("other.toml");
        std::fs::write(
            &file,
            "environment = \"staging\"\n[api]\nkeys = [\"0123456789abcdef\"]\n",
        )
        .unwrap();
        let e = env(&[("XENIOS_CONFIG", file.to_str().unwrap())]);
        let s = Settings::load_from(None, &e, &Overrides::new()).unwrap();
        assert_eq!(s.environment, Environment::Staging);
    }

    #[test]
    fn bad_values_name_the_key_in_one_line() {
        let err = load(&[("XENIOS_API_ADDR", "not-an-address")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.addr"), "{err}");
        assert!(!err.contains('\n'));

        let err = load(&[("XENIOS__DATABASE__MAX_CONNECTIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections"), "{err}");

        let err = load(&[("ENVIRONMENT", "production")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("XENIOS_BACKEND_API_KEY"), "{err}");

        let err = load(&[("DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");

        let err = load(&[("XENIOS__JOBS__LLM__SOFT_LIMIT_SECS", "900")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobs.llm"), "{err}");

        let err = load(&[("XENIOS__API__NO_SUCH_KEY", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_key"), "{err}");

        for bad in [
            "https://app.example/",
            "app.example",
            "ftp://app.example",
            "*,https://app.example",
        ] {
            let err = load(&[("CORS_ORIGINS", bad)]).unwrap_err().to_string();
            assert!(err.contains("CORS_ORIGINS"), "{bad}: {err}");
        }
        for good in ["*", "https://app.example, http://localhost:5173"] {
            assert!(load(&[("CORS_ORIGINS", good)]).is_ok(), "{good}");
        }

        for (key, value, named) in [
            (
                "XENIOS__JOBS__ECHO__HARD_LIMIT_SECS",
                "99999999999",
                "jobs.echo",
            ),
            (
                "XENIOS__LLM__STREAM_IDLE_TIMEOUT_MS",
                "99999999999999",
                "llm.stream_idle_timeout_ms",
            ),
            (
                "XENIOS__CONSUMER__RETRY_DELAYS_MS",
                "100,99999999999",
                "consumer.retry_delays_ms",
            ),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(named), "{key}: {err}");
        }

        let err = load(&[("XENIOS__LLM__MAX_TOKENS_LIMIT", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("llm.max_tokens_limit"), "{err}");

        // A lease past the consumers' ack_wait would refuse the redelivery after a crash.
        let err = load(&[("XENIOS__CONSUMER__LEASE_SECS", "45")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("consumer.lease_secs"), "{err}");

        let missing = Settings::load_from(
            Some(Path::new("/nonexistent/xenios.toml")),
            &HashMap::new(),
            &Overrides::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("/nonexistent/xenios.toml"), "{missing}");
    }

    #[test]
    fn nats_urls_are_nats_or_tls_and_refused_without_their_password() {
        let s = load(&[("NATS_URL", "tls://u:p@a:4222,b:4222")]).unwrap();
        assert_eq!(s.nats.url, vec!["tls://u:p@a:4222", "b:4222"]);
        for bad in ["ws://u:hunter2@a:8080", "nast://u:hunter2@a:4222"] {
            let e = load(&[("NATS_URL", bad)]).unwrap_err().to_string();
            assert!(
                e.contains("NATS_URL") && e.contains("nats://, tls://"),
                "{e}"
            );
            assert!(!e.contains("hunter2"), "the password shown: {e}");
        }
    }

    /// Writes `text` to `name` in `dir`; its path, as a setting gives it.
    fn write_file(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn nats_tls_files_are_read_at_start_and_named_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write_file(dir.path(), name, text);
        let cert = write(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let key = write(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        );
        let garbled = write("garbled.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let missing = dir.path().join("missing.pem").display().to_string();

        let (ca_var, cert_var, key_var) = (
            "XENIOS__NATS__TLS_CA_FILE",
            "XENIOS__NATS__TLS_CERT_FILE",
            "XENIOS__NATS__TLS_KEY_FILE",
        );
        let s = load(&[(ca_var, &cert), (cert_var, &cert), (key_var, &key)]).unwrap();
        assert_eq!(s.nats.tls_ca_file.as_deref(), Some(cert.as_str()));
        assert_eq!(s.nats.tls_key_file.as_deref(), Some(key.as_str()));
        assert_eq!(load(&[]).unwrap().nats.tls_ca_file, None);

        // The settings, the key the error names, what it says.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 6] = [
            (&[(cert_var, &cert)], "nats.tls_cert_file", "tls_key_file"),
            (&[(ca_var, &missing)], "nats.tls_ca_file", "cannot read"),
            (&[(ca_var, &key)], "nats.tls_ca_file", "no PEM certificate"),
            (&[(ca_var, &garbled)], "nats.tls_ca_file", "not valid PEM"),
            (
                &[(cert_var, &cert), (key_var, &cert)],
                "nats.tls_key_file",
                "no PEM private key",
            ),
            (&[(ca_var, "")], "nats.tls_ca_file", "is empty"),
        ];
        for (pairs, named, problem) in cases {
            let e = load(pairs).unwrap_err().to_string();
            assert!(e.contains(named) && e.contains(problem), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn a_nats_credentials_file_is_read_at_start_and_named_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write_file(dir.path(), name, text);
        let creds = write(
            "user.creds",
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\nSUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n\
             ------END USER NKEY SEED------\n",
        );
        let s = load(&[("NATS_CREDS", &creds)]).unwrap();
        assert_eq!(s.nats.creds.as_deref(), Some(creds.as_str()));

        let jwt_only = write(
            "jwt.creds",
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n",
        );
        let pem = write(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let seed_first = write(
            "swapped.creds",
            "-----BEGIN USER NKEY SEED-----\nSUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n\
             ------END USER NKEY SEED------\n\
             -----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n",
        );
        let missing = dir.path().join("missing.creds").display().to_string();
        for (path, problem) in [
            (&missing, "cannot read"),
            (&jwt_only, "not a NATS credentials file"),
            (&seed_first, "not a NATS credentials file"),
            (&pem, "not a NATS credentials file"),
        ] {
            let e = load(&[("NATS_CREDS", path)]).unwrap_err().to_string();
            assert!(e.contains("NATS_CREDS") && e.contains(problem), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = load(&[("XENIOS__NATS__CREDS", " ")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats.creds") && e.contains("is empty"), "{e}");
    }

    #[test]
    fn blank_optional_values_are_unset_and_blank_required_ones_refused() {
        let s = load(&[
            ("SUPABASE_URL", ""),
            ("SUPABASE_JWT_SECRET", ""),
            ("DOCLING_URL", " "),
            ("OPENAI_BASE_URL", ""),
            ("CORS_ORIGINS", ""),
            ("XENIOS_FETCH_ALLOW_HOSTS", ""),
            ("NATS_CREDS", ""),
        ])
        .unwrap();
        assert_eq!(s.auth.supabase_url, None);
        assert!(s.auth.jwt_secret.is_none());
        assert_eq!(s.providers.docling_url, None);
        assert_eq!(s.providers.openai.base_url, None);
        assert!(s.api.cors_origins.is_empty());
        assert!(s.fetch.allow_hosts.is_empty());
        assert_eq!(s.nats.creds, None);

        // What the verifier could not use is refused at load, naming the key.
        for (name, value, key) in [
            ("SUPABASE_URL", "https://bad host", "SUPABASE_URL"),
            ("SUPABASE_URL", "https://", "SUPABASE_URL"),
            ("XENIOS__AUTH__JWT_SECRET", "", "auth.jwt_secret"),
            ("XENIOS__AUTH__AUDIENCE", " ", "auth.audience"),
            (
                "XENIOS__DATABASE__SQLITE_SYNCHRONOUS",
                "off",
                "database.sqlite_synchronous",
            ),
        ] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(
                err.contains(key) && !err.contains('\n'),
                "{name}={value:?}: {err}"
            );
        }

        // A production deployment whose key variable is blank must not start keyless.
        let err = load(&[
            ("ENVIRONMENT", "production"),
            ("XENIOS_BACKEND_API_KEY", ""),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("XENIOS_BACKEND_API_KEY"), "{err}");

        for name in ["DATABASE_URL", "NATS_URL", "XENIOS_API_ADDR"] {
            let err = load(&[(name, "")]).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{name}: {err}");
        }
    }

    #[test]
    fn show_redacts_every_secret() {
        let s = load(&[
            ("XENIOS_BACKEND_API_KEY", "very-secret-api-key-1"),
            ("SUPABASE_JWT_SECRET", "very-secret-jwt"),
            ("OPENROUTER_API_KEY", "very-secret-openrouter"),
            ("DATABASE_URL", "postgres://app:very-secret-pw@db/x"),
            (
                "NATS_URL",
                "nats://svc:very-secret-nats@n1:4222,nats://very-secret-token@n2:4222",
            ),
        ])
        .unwrap();
        let shown = s.show();
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(shown.contains("n2:4222"), "{shown}");
        let debug = format!("{s:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
    }
}
