use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

use crate::free_port;
use crate::process::{spawn_logged, stop_child};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The variable naming the admin server on which `test_database_url` creates databases.
pub const TEST_POSTGRES_URL_VAR: &str = "XENIOS_TEST_POSTGRES_URL";

/// A private PostgreSQL server: its own cluster in a temp dir, its own loopback port, run as a
/// direct child process so stopping and restarting it (outage tests) is in our hands.
pub struct PgServer {
    bindir: PathBuf,
    dir: TempDir,
    port: u16,
    /// Set when we run as root: PostgreSQL refuses to, so the processes run as `postgres`.
    run_as: Option<(u32, u32)>,
    options: PgOptions,
    child: Option<Child>,
}

/// What a [`PgServer`] asks of its clients and promises them, beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Commits synced as in production; otherwise not at all (throwaway test data).
    pub durable: bool,
    /// A certificate and its key: the server then takes TCP clients over TLS only, each
    /// logging in with a password (SCRAM), as a hosted PostgreSQL such as Supabase's does.
    /// The superuser still comes in without one over the server's socket
    /// ([`PgServer::socket_url`]), to make the roles and databases a test logs in to.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The server's copies of the certificate and key of [`PgOptions::tls`].
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";

impl PgServer {
    /// Creates a fresh cluster (trust auth, superuser `postgres`) and starts it, its
    /// commits never synced: test data is thrown away, and durability only costs test time.
    pub fn start() -> anyhow::Result<PgServer> {
        Self::start_with(PgOptions::default())
    }

    /// [`PgServer::start`] with PostgreSQL's own durability settings (every commit synced),
    /// for measurements that must pay what production pays.
    pub fn start_durable() -> anyhow::Result<PgServer> {
        Self::start_with(PgOptions {
            durable: true,
            ..PgOptions::default()
        })
    }

    pub fn start_with(options: PgOptions) -> anyhow::Result<PgServer> {
        let bindir = find_bindir()?;
        let (dir, run_as) = private_dir("xenios-pg-")?;
        let mut server = PgServer {
            bindir,
            dir,
            port: free_port(),
            run_as,
            options,
            child: None,
        };
        server.initdb()?;
        if let Some((cert, key)) = &server.options.tls {
            let data = server.data_dir();
            copy_private(cert, &data.join(SERVER_CERT), run_as)?;
            copy_private(key, &data.join(SERVER_KEY), run_as)?;
            // Over TCP only TLS and a password; the socket stays the superuser's way in.
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
            std::fs::write(data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        }
        server.spawn()?;
        Ok(server)
    }

    /// The superuser over TCP, without a password: what a server started without
    /// [`PgOptions::tls`] lets in.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The superuser over the server's unix socket, which lets it in whatever the options.
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (SIGINT: active sessions are rolled back), waiting for the postmaster to
    /// exit so the port is free and the data dir consistent when this returns.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if !stop_child(child, "INT", STOP_TIMEOUT) {
            tracing::warn!(pid, "postgres did not stop in time; killed it");
        }
    }

    /// Starts the server again on the same data dir and port, after `stop`.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("postgres on port {} is already running", self.port);
        }
        self.spawn()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        // The postgres user may not be allowed into the caller's working directory.
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = self.command("postgres");
        if self.options.tls.is_some() {
            command.args(["-c", "ssl=on", "-c", "password_encryption=scram-sha-256"]);
            command.args(["-c", &format!("ssl_cert_file={SERVER_CERT}")]);
            command.args(["-c", &format!("ssl_key_file={SERVER_KEY}")]);
        }
        if !self.options.durable {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
            command.args(["-c", "full_page_writes=off"]);
        }
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Every test gets its own database and pool; the default 100 is quickly reached.
            .args(["-c", "max_connections=300"]);
        let child = spawn_logged(&mut command, &self.log_path()).context("starting postgres")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("postgres exited at start ({status}): {}", self.log_tail());
            }
            // pg_isready, unlike a TCP connect, waits out "the database system is starting up".
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-t", "1"])
                .arg("-p")
                .arg(self.port.to_string())
                .stdin(Stdio::null())
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "postgres on port {} not ready after {READY_TIMEOUT:?}: {}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh, randomly named database on the server named by `XENIOS_TEST_POSTGRES_URL`
/// (`make test` starts one private server and exports it), so tests never share state.
pub async fn test_database_url() -> anyhow::Result<String> {
    let admin = std::env::var(TEST_POSTGRES_URL_VAR).map_err(|_| {
        anyhow::anyhow!(
            "{TEST_POSTGRES_URL_VAR} is not set: run the tests with `make test`, which starts a \
             private PostgreSQL, or export {TEST_POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:PORT/postgres \
             pointing at a throwaway server"
        )
    })?;
    let name = format!("xenios_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .with_context(|| format!("connecting to {TEST_POSTGRES_URL_VAR}"))?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .context("creating the test database")?;
    conn.close().await.ok();
    with_database(&admin, &name)
}

/// Replaces the database name (the URL path) and keeps any query string.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("{TEST_POSTGRES_URL_VAR} is not a URL"))?;
    let end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

fn find_bindir() -> anyhow::Result<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .context("no /usr/lib/postgresql/*/bin and no pg_config: is PostgreSQL installed?")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !bin.join("postgres").exists() {
        bail!("pg_config --bindir gave no directory holding `postgres`");
    }
    Ok(bin)
}

/// A temp dir for a server's files, and whom the server runs as: the `postgres` user when we
/// are root (PostgreSQL and PgBouncer refuse to run as root), who then owns the dir.
pub(crate) fn private_dir(prefix: &str) -> anyhow::Result<(TempDir, Option<(u32, u32)>)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let run_as = if current_uid()? == 0 {
        let ids = postgres_user_ids()?;
        std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
            .context("handing the temp dir to the postgres user")?;
        Some(ids)
    } else {
        None
    };
    Ok((dir, run_as))
}

/// Writes `to`, readable only by the user the server runs as (both servers refuse a private
/// key others may read).
pub(crate) fn write_private(
    to: &Path,
    contents: &[u8],
    run_as: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    std::fs::write(to, contents).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(to, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the postgres user", to.display()))?;
    }
    Ok(())
}

pub(crate) fn copy_private(
    from: &Path,
    to: &Path,
    run_as: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let contents = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_private(to, &contents, run_as)
}

fn current_uid() -> anyhow::Result<u32> {
    id(&["-u"])
}

fn postgres_user_ids() -> anyhow::Result<(u32, u32)> {
    let ids = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
    match ids {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => bail!(
            "running as root, and PostgreSQL refuses that: a `postgres` system user is needed"
        ),
    }
}

fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id")
        .args(args)
        .output()
        .context("running id")?;
    if !out.status.success() {
        bail!("id {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn select_one(url: &str) -> Result<i32, sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok(one)
    }

    #[tokio::test]
    async fn stops_and_starts_again_on_the_same_port() {
        let mut pg = PgServer::start().unwrap();
        assert_eq!(select_one(&pg.url()).await.unwrap(), 1);

        pg.stop();
        match select_one(&pg.url()).await {
            Err(sqlx::Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("expected connection refused, got {other:?}"),
        }

        let port = pg.port();
        pg.start_again().unwrap();
        assert_eq!(pg.port(), port);
        assert_eq!(select_one(&pg.url()).await.unwrap(), 1);
    }

    /// Measurements get production's durability, tests none.
    #[tokio::test]
    async fn a_durable_server_syncs_its_commits_and_a_test_server_does_not() {
        let show = |url: String| async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let mut settings = Vec::new();
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                settings.push(value);
            }
            settings
        };
        let durable = PgServer::start_durable().unwrap();
        assert_eq!(show(durable.url()).await, ["on", "on", "on"]);
        let throwaway = PgServer::start().unwrap();
        assert_eq!(show(throwaway.url()).await, ["off", "off", "off"]);
    }

    #[test]
    fn replaces_the_database_name() {
        let f = |u| with_database(u, "t1").unwrap();
        assert_eq!(f("postgres://p@h:1/postgres"), "postgres://p@h:1/t1");
        assert_eq!(f("postgres://p@h:1"), "postgres://p@h:1/t1");
        assert_eq!(
            f("postgres://p@h:1/x?sslmode=disable"),
            "postgres://p@h:1/t1?sslmode=disable"
        );
    }
}
