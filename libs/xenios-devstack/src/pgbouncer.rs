use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::free_port;
use crate::postgres::{copy_private, private_dir, write_private};
use crate::process::{spawn_logged, stop_child};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A private PgBouncer in session mode in front of a PostgreSQL server on this machine: a
/// connection pooler between the fleet and its database, as Supabase's session pooler
/// (Supavisor on port 5432) is. Clients log in with a password (SCRAM) over TLS, and it logs
/// in to the server as them, over TLS too. Stopped on drop.
pub struct Pgbouncer {
    dir: TempDir,
    port: u16,
    /// As for PostgreSQL: when we are root, it runs as `postgres` (it refuses to run as root).
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

/// What a [`Pgbouncer`] serves and whom it lets in.
#[derive(Clone, Debug)]
pub struct PgbouncerOptions {
    /// The PostgreSQL server's port on 127.0.0.1; every database on it is served.
    pub server_port: u16,
    /// The users and their passwords, the same as the server's.
    pub users: Vec<(String, String)>,
    /// The certificate and key shown to clients, which must use TLS.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed the server's certificate, checked with the server's address.
    pub server_ca: PathBuf,
}

impl Pgbouncer {
    pub fn start(options: &PgbouncerOptions) -> anyhow::Result<Pgbouncer> {
        let (dir, run_as) = private_dir("xenios-pgbouncer-")?;
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        copy_private(&options.cert, &path("pooler.crt"), run_as)?;
        copy_private(&options.key, &path("pooler.key"), run_as)?;
        copy_private(&options.server_ca, &path("server-ca.crt"), run_as)?;
        let users: String = options
            .users
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        write_private(&path("userlist.txt"), users.as_bytes(), run_as)?;
        // Only the parameters a pooler must be given: everything else as PgBouncer ships,
        // so a client that needs more of it than Supavisor gives fails here too.
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             pool_mode = session\n\
             max_client_conn = 1000\n\
             default_pool_size = 100\n\
             auth_type = scram-sha-256\n\
             auth_file = {users}\n\
             client_tls_sslmode = require\n\
             client_tls_cert_file = {cert}\n\
             client_tls_key_file = {key}\n\
             server_tls_sslmode = verify-full\n\
             server_tls_ca_file = {ca}\n",
            server = options.server_port,
            users = path("userlist.txt").display(),
            cert = path("pooler.crt").display(),
            key = path("pooler.key").display(),
            ca = path("server-ca.crt").display(),
        );
        std::fs::write(path("pgbouncer.ini"), config)?;

        let mut bouncer = Pgbouncer {
            dir,
            port,
            run_as,
            child: None,
        };
        bouncer.spawn()?;
        Ok(bouncer)
    }

    /// Starts it again on the same port, after `stop`: a pooler's restart, as a hosted one
    /// has for its maintenance.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("pgbouncer on port {} is already running", self.port);
        }
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(crate::find_program("pgbouncer")?);
        command
            .current_dir(self.dir.path())
            .arg(self.dir.path().join("pgbouncer.ini"));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let child = spawn_logged(&mut command, &self.dir.path().join("pgbouncer.log"))
            .context("starting pgbouncer (apt-get install pgbouncer; `make test` does)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("pgbouncer exited at start ({status}): {}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "pgbouncer not listening after {READY_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// What it logged: why it refused a client, say.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Immediate shutdown (SIGTERM: its clients are cut off, as in a pooler's restart).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, "TERM", STOP_TIMEOUT);
        }
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        self.stop();
    }
}
