use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use xenios_config::{Environment, Overrides, Settings};

use xenios_contract::JobKind;

use crate::jobs::JobsAction;
use crate::start::{
    close_nats, connect_nats, connect_store, serve_all, serve_worker, stream_settings,
};
use crate::users::UsersAction;

/// Used by `xenios dev` and `xenios token` in development when nothing else is configured, so
/// a newcomer's first curl works. Never used in staging or production.
const DEV_API_KEY: &str = "xenios-dev-api-key";
const DEV_JWT_SECRET: &str = "xenios-dev-jwt-secret-not-for-production";
const DEV_USER_ID: &str = "00000000-0000-4000-8000-000000000001";
const DEV_WEBHOOK_SECRET: &str = "xenios-dev-webhook-secret";

#[derive(Parser)]
#[command(name = "xenios", version, about = "Operate the Xenios AI backend")]
struct Cli {
    /// Configuration file (default: $XENIOS_CONFIG, else ./xenios.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole stack in one process: API and consumers, SQLite, and a nats-server it starts.
    Dev {
        /// Where the embedded nats-server keeps its store.
        #[arg(long, default_value = "data/nats")]
        nats_dir: PathBuf,
    },
    /// The API and consumers in one process, against the configured NATS and database: a
    /// single host, e.g. on the embedded SQLite store. `xenios dev` without the nats-server
    /// and the development defaults.
    Serve {
        /// Kinds to serve (repeat or comma-separate); default: every kind this build serves.
        #[arg(long = "kind", value_delimiter = ',')]
        kinds: Vec<String>,
    },
    /// Consumers only (no API): pull and run jobs of the given kinds.
    Worker {
        /// Kinds to serve (repeat or comma-separate); default: every kind this build serves.
        #[arg(long = "kind", value_delimiter = ',')]
        kinds: Vec<String>,
    },
    /// Apply the database migrations.
    Migrate,
    /// The JetStream streams and consumers defined in `streams/`.
    Streams {
        #[command(subcommand)]
        action: StreamsAction,
    },
    /// Jobs: list, show, cancel, resubmit, counts, purge, LLM usage (straight from the store).
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Users: erase everything held of one (straight from the store and the broker).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Mint an HS256 user token with the configured SUPABASE_JWT_SECRET (not in production).
    Token {
        #[arg(long, default_value = DEV_USER_ID)]
        user: String,
        #[arg(long, default_value = "authenticated")]
        role: String,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Subcommand)]
enum StreamsAction {
    /// Create or update every stream and consumer (idempotent).
    Apply,
    /// Report drift between the server and `streams/`; exits 1 on drift.
    Check,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the effective configuration, secrets redacted.
    Show,
}

/// `xenios`: the operator CLI.
pub async fn xenios_main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev { nats_dir } => dev(cli.config.as_deref(), &nats_dir).await,
        Command::Serve { kinds } => serve(cli.config.as_deref(), &kinds).await,
        Command::Worker { kinds } => worker(cli.config.as_deref(), &kinds).await,
        Command::Migrate => migrate(cli.config.as_deref()).await,
        Command::Streams { action } => streams(cli.config.as_deref(), action).await,
        Command::Jobs { action } => match load(cli.config.as_deref(), &Overrides::new()) {
            Ok(settings) => crate::jobs::jobs(settings, action).await,
            Err(e) => Err(e),
        },
        Command::Users { action } => match load(cli.config.as_deref(), &Overrides::new()) {
            Ok(settings) => crate::users::users(settings, action).await,
            Err(e) => Err(e),
        },
        Command::Config {
            action: ConfigAction::Show,
        } => load(cli.config.as_deref(), &Overrides::new()).map(|s| {
            print!("{}", s.show());
            ExitCode::SUCCESS
        }),
        Command::Token {
            user,
            role,
            email,
            ttl,
        } => token(cli.config.as_deref(), &user, &role, email.as_deref(), ttl),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xenios: {}", crate::one_line(&e));
        ExitCode::FAILURE
    })
}

fn load(config: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    Ok(Settings::load_from(config, &env, overrides)?)
}

/// Development defaults for what a newcomer has not configured.
fn dev_overrides(settings: &Settings) -> Overrides {
    let mut overrides = Overrides::new();
    if settings.environment != Environment::Development {
        return overrides;
    }
    if settings.api.keys.is_empty() {
        overrides.push(("api.keys".into(), DEV_API_KEY.into()));
    }
    if settings.auth.jwt_secret.is_none() && settings.auth.supabase_url.is_none() {
        overrides.push(("auth.jwt_secret".into(), DEV_JWT_SECRET.into()));
    }
    if settings.webhooks.secret.is_none() {
        overrides.push(("webhooks.secret".into(), DEV_WEBHOOK_SECRET.into()));
    }
    overrides
}

fn load_with_dev_defaults(config: Option<&Path>, mut extra: Overrides) -> anyhow::Result<Settings> {
    let first = load(config, &Overrides::new())?;
    let mut overrides = dev_overrides(&first);
    overrides.append(&mut extra);
    load(config, &overrides)
}

fn token(
    config: Option<&Path>,
    user: &str,
    role: &str,
    email: Option<&str>,
    ttl: u64,
) -> anyhow::Result<ExitCode> {
    let settings = load_with_dev_defaults(config, Overrides::new())?;
    if settings.environment.is_production() {
        bail!("`xenios token` is refused in production");
    }
    let Some(secret) = &settings.auth.jwt_secret else {
        bail!("SUPABASE_JWT_SECRET (auth.jwt_secret) is not set");
    };
    let token = xenios_auth::mint_hs256(
        secret.expose(),
        user,
        role,
        email,
        &settings.auth.audience,
        Duration::from_secs(ttl),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn parse_kinds(kinds: &[String]) -> anyhow::Result<Vec<JobKind>> {
    Ok(kinds
        .iter()
        .map(|k| k.parse::<JobKind>())
        .collect::<Result<Vec<_>, _>>()?)
}

async fn worker(config: Option<&Path>, kinds: &[String]) -> anyhow::Result<ExitCode> {
    let settings = load(config, &Overrides::new())?;
    xenios_telemetry::init_logging(&settings)?;
    serve_worker(settings, "xenios-worker", &parse_kinds(kinds)?).await?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Option<&Path>, kinds: &[String]) -> anyhow::Result<ExitCode> {
    let settings = load(config, &Overrides::new())?;
    xenios_telemetry::init_logging(&settings)?;
    let kinds = parse_kinds(kinds)?;
    serve_all(settings, "xenios-serve", &kinds, |addr| {
        tracing::info!(%addr, "xenios serve listening");
        Ok(())
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = load(config, &Overrides::new())?;
    let mut settings = settings;
    settings.database.migrate_on_start = true;
    let store = connect_store(&settings).await?;
    store.close().await;
    println!(
        "migrated {}",
        xenios_config::redact_url(&settings.database.url)
    );
    Ok(ExitCode::SUCCESS)
}

async fn streams(config: Option<&Path>, action: StreamsAction) -> anyhow::Result<ExitCode> {
    let mut settings = load(config, &Overrides::new())?;
    settings.nats.apply_streams_on_start = false;
    let client = connect_nats(&settings, "xenios-cli").await?;
    let js = async_nats::jetstream::new(client.clone());
    let desired = stream_settings(&settings);
    let code = match action {
        StreamsAction::Apply => {
            let report = xenios_contract::streams::apply(&js, &desired).await?;
            println!("{report}");
            ExitCode::SUCCESS
        }
        StreamsAction::Check => {
            let drift = xenios_contract::streams::check(&js, &desired).await?;
            if drift.is_empty() {
                println!("no drift: the server matches streams/");
                ExitCode::SUCCESS
            } else {
                for d in &drift {
                    println!("{d}");
                }
                ExitCode::from(1)
            }
        }
    };
    close_nats(client).await;
    Ok(code)
}

async fn dev(config: Option<&Path>, nats_dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(nats_dir)
        .with_context(|| format!("cannot create {}", nats_dir.display()))?;
    let port = xenios_devstack::free_port();
    let nats = xenios_devstack::NatsServer::start_in(nats_dir, port)
        .context("cannot start nats-server (is it installed? `make run` installs it)")?;
    let settings = load_with_dev_defaults(config, vec![("nats.url".into(), nats.url())])?;
    xenios_telemetry::init_logging(&settings)?;
    if let Some(dir) = settings
        .database
        .url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p).parent())
    {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }

    let nats_url = nats.url();
    serve_all(settings.clone(), "xenios-dev", &[], |addr| {
        print_welcome(&settings, addr, &nats_url)
    })
    .await?;
    // The nats-server child stops only after the process's last word to it.
    drop(nats);
    Ok(ExitCode::SUCCESS)
}

fn print_welcome(
    settings: &Settings,
    addr: std::net::SocketAddr,
    nats_url: &str,
) -> anyhow::Result<()> {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let key = settings
        .api
        .keys
        .first()
        .map(|k| k.expose().to_owned())
        .unwrap_or_default();
    let token = match &settings.auth.jwt_secret {
        Some(secret) => xenios_auth::mint_hs256(
            secret.expose(),
            DEV_USER_ID,
            "authenticated",
            None,
            &settings.auth.audience,
            Duration::from_secs(24 * 3600),
        )?,
        None => "<mint one: xenios token --user <uuid>>".into(),
    };
    println!(
        "\nxenios dev is up\n  API      http://{host}  (docs: http://{host}/docs)\n  NATS     {nats_url}\n  database {}\n  API key  {key}\n\nTry it:\n  export XENIOS_KEY='{key}'\n  export XENIOS_JWT='{token}'\n  curl -s -X POST http://{host}/api/v1/jobs -H \"X-API-Key: $XENIOS_KEY\" -H \"Authorization: Bearer $XENIOS_JWT\" -H 'Content-Type: application/json' -d '{{\"kind\":\"echo\",\"input\":{{\"message\":\"hello\",\"progress_steps\":3,\"delay_ms\":300}}}}'\n  curl -N http://{host}/api/v1/jobs/<job_id>/events -H \"X-API-Key: $XENIOS_KEY\" -H \"Authorization: Bearer $XENIOS_JWT\"\n",
        xenios_config::redact_url(&settings.database.url)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(environment: &str, extra: &[(&str, &str)]) -> Settings {
        let mut overrides: Overrides = vec![
            ("environment".into(), environment.into()),
            ("database.url".into(), "sqlite://data/x.db".into()),
            ("nats.url".into(), "nats://127.0.0.1:4222".into()),
        ];
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::load_from(Some(Path::new("/dev/null")), &HashMap::new(), &overrides).unwrap()
    }

    /// A newcomer's `xenios dev` can use keys, tokens and webhooks at once; what is
    /// configured is kept, and nothing is filled in outside development.
    #[test]
    fn development_fills_in_only_what_is_missing() {
        let keys = |o: &Overrides| o.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let filled = dev_overrides(&settings("development", &[]));
        assert_eq!(
            keys(&filled),
            ["api.keys", "auth.jwt_secret", "webhooks.secret"]
        );
        let configured = settings(
            "development",
            &[("webhooks.secret", "a-configured-secret-0123456789")],
        );
        assert!(!keys(&dev_overrides(&configured)).contains(&"webhooks.secret".to_owned()));
        let staging = settings(
            "staging",
            &[
                ("api.keys", "a-staging-key-0123456789"),
                ("auth.jwt_secret", "a-staging-jwt-secret-0123456789"),
            ],
        );
        assert!(dev_overrides(&staging).is_empty());
    }
}
