use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::free_port;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(25);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// `free_port` can race with another process; a fresh server simply tries another port.
const START_ATTEMPTS: usize = 3;
const LOG_FILE: &str = "nats-server.log";

/// How a private server differs from the plain one [`NatsServer::start`] gives: as a
/// deployment's, speaking only TLS and wanting a user and password of every client, or in
/// operator mode.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub tls: Option<ServerTls>,
    pub user: Option<(String, String)>,
    /// A configuration file (`-c`) for what has no flag, such as operator mode
    /// ([`crate::TestOperator::server_config`]); the flags this type sets win over it.
    pub config: Option<PathBuf>,
}

/// A node of a private JetStream cluster ([`NatsServer::start_cluster`]): its name, the port
/// its routes listen on, and the other nodes' route ports.
#[derive(Clone, Debug)]
struct ClusterMember {
    server_name: String,
    route_port: u16,
    peer_route_ports: Vec<u16>,
}

/// What a server that speaks only TLS presents, and, when given, the CA whose client
/// certificates it requires of every client (`--tlsverify`).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A private `nats-server` with JetStream: its own loopback port and store dir, run as a direct
/// child process so tests can stop, kill and restart the broker (same port, same store) at will.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Run outside the caller's process group, so a terminal's Ctrl-C reaches only the caller,
    /// which stops the server after it has drained (`xenios dev`). Tests leave it in their
    /// group: an interrupted test run takes its servers with it.
    own_process_group: bool,
    options: ServerOptions,
    cluster: Option<ClusterMember>,
    /// Present when the server owns its directory: removed on drop, after the process is gone.
    _temp: Option<TempDir>,
}

impl NatsServer {
    /// Starts a throwaway server in a fresh temp dir on a free port.
    pub fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with(ServerOptions::default())
    }

    /// Like [`NatsServer::start`], with `options`. A server speaking TLS has a `tls://`
    /// [`NatsServer::url`]; the URL never holds the user and password.
    pub fn start_with(options: ServerOptions) -> anyhow::Result<NatsServer> {
        let mut server = NatsServer::in_temp_dir(options, None)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Starts `size` servers on free ports that form one JetStream cluster (`xenios-test`),
    /// named `node-1` … as [`NatsServer::server_name`] says. Each is ready when this returns:
    /// its JetStream answers, which it does only once the cluster has a meta leader.
    pub fn start_cluster(size: usize) -> anyhow::Result<Vec<NatsServer>> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            // A port taken meanwhile stops a node: the whole cluster tries other ports.
            match NatsServer::try_cluster(size) {
                Ok(nodes) => return Ok(nodes),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn try_cluster(size: usize) -> anyhow::Result<Vec<NatsServer>> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes = Vec::with_capacity(size);
        for (index, route_port) in route_ports.iter().enumerate() {
            let member = ClusterMember {
                server_name: format!("node-{}", index + 1),
                route_port: *route_port,
                peer_route_ports: route_ports
                    .iter()
                    .filter(|port| *port != route_port)
                    .copied()
                    .collect(),
            };
            let mut node = NatsServer::in_temp_dir(ServerOptions::default(), Some(member))?;
            node.port = free_port();
            nodes.push(node);
        }
        // All started before any is waited for: none has JetStream without a quorum.
        for node in &mut nodes {
            node.launch()?;
        }
        for node in &mut nodes {
            node.wait_ready()?;
        }
        Ok(nodes)
    }

    /// The name the server gives itself (`node-1` in a cluster), as JetStream reports a
    /// stream's leader.
    pub fn server_name(&self) -> Option<&str> {
        let member = self.cluster.as_ref()?;
        Some(&member.server_name)
    }

    /// A server not yet started, owning a fresh temp dir for its store and log.
    fn in_temp_dir(
        options: ServerOptions,
        cluster: Option<ClusterMember>,
    ) -> anyhow::Result<NatsServer> {
        let temp = tempfile::Builder::new().prefix("xenios-nats-").tempdir()?;
        Ok(NatsServer {
            binary: crate::find_program("nats-server")?,
            port: 0,
            store_dir: temp.path().join("store"),
            log_path: temp.path().join(LOG_FILE),
            child: None,
            own_process_group: false,
            options,
            cluster,
            _temp: Some(temp),
        })
    }

    /// Starts a server whose JetStream store lives in `dir` (created if missing) and outlives
    /// this value: `xenios dev` keeps its queues and events across runs this way. The server
    /// runs in a process group of its own (see `own_process_group`).
    pub fn start_in(dir: &Path, port: u16) -> anyhow::Result<NatsServer> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the NATS store dir {}", dir.display()))?;
        let mut server = NatsServer {
            binary: crate::find_program("nats-server")?,
            port,
            store_dir: dir.to_path_buf(),
            log_path: dir.join(LOG_FILE),
            child: None,
            own_process_group: true,
            options: ServerOptions::default(),
            cluster: None,
            _temp: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Graceful shutdown (SIGTERM), waiting for the process to exit so the port is free and the
    /// store flushed when this returns; killed if it does not exit in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if send_signal(child.id(), "-TERM") {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) => thread::sleep(POLL_INTERVAL),
                    Err(_) => break,
                }
            }
            tracing::warn!(
                pid = child.id(),
                "nats-server did not stop in time; killing it"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGSTOP: the broker stops answering but keeps its connections, as a stalled host
    /// would; [`NatsServer::thaw`] lets it go on.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            send_signal(child.id(), "-STOP");
        }
    }

    /// SIGCONT after [`NatsServer::freeze`].
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            send_signal(child.id(), "-CONT");
        }
    }

    /// SIGKILL: the broker dies without flushing, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store dir, after `stop` or `kill`.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("nats-server on port {} is already running", self.port);
        }
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.launch()?;
        self.wait_ready()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut command = Command::new(&self.binary);
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir);
        if let Some(config) = &self.options.config {
            command.arg("-c").arg(config);
        }
        if let Some((user, password)) = &self.options.user {
            command.args(["--user", user, "--pass", password]);
        }
        if let Some(member) = &self.cluster {
            let routes: Vec<String> = member
                .peer_route_ports
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect();
            command
                .args(["--name", &member.server_name])
                .args(["--cluster_name", "xenios-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", member.route_port))
                .arg("--routes")
                .arg(routes.join(","));
        }
        if let Some(tls) = &self.options.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(&tls.cert)
                .arg("--tlskey")
                .arg(&tls.key);
            if let Some(ca) = &tls.client_ca {
                command.arg("--tlsverify").arg("--tlscacert").arg(ca);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "nats-server on port {} exited at start ({status}): {}",
                    self.port,
                    self.log_tail()
                );
            }
            // The plain protocol probe cannot speak to a TLS server, nor log in; the greeting
            // shows the server up, and its clients (which retry) wait for JetStream themselves.
            let needs_login = self.options.user.is_some() || self.options.config.is_some();
            let probe = if self.options.tls.is_some() || needs_login {
                greeting_probe(addr)
            } else {
                jetstream_probe(addr)
            };
            let Err(not_ready) = probe else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "nats-server on port {} not ready after {READY_TIMEOUT:?} ({not_ready}): {}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a server's greeting (`INFO`, sent in clear before any TLS handshake).
fn greeting_probe(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if !line.starts_with("INFO ") {
        bail!("unexpected greeting {line:?}");
    }
    Ok(())
}

/// Asks the JetStream API for the account info over the plain NATS protocol. A TCP accept alone
/// is not enough: the server answers clients before JetStream has recovered its streams.
fn jetstream_probe(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("INFO ") {
        bail!("unexpected greeting {line:?}");
    }
    stream.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n\
          SUB _xenios_probe 1\r\n\
          PUB $JS.API.INFO _xenios_probe 0\r\n\r\n",
    )?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        let header = line.trim_end();
        if let Some(rest) = header.strip_prefix("MSG ") {
            let size: usize = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .context("malformed MSG line")?;
            let mut payload = vec![0; size + 2];
            reader.read_exact(&mut payload)?;
            let body = String::from_utf8_lossy(&payload[..size]);
            if body.contains("\"error\"") {
                bail!("JetStream not ready: {body}");
            }
            return Ok(());
        }
        if header == "PING" {
            stream.write_all(b"PONG\r\n")?;
        } else if header.starts_with("-ERR") {
            bail!("server error: {header}");
        }
    }
}

/// `kill -<signal> <pid>`; whether the signal was delivered.
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(server: &NatsServer) -> anyhow::Result<()> {
        jetstream_probe(SocketAddr::from(([127, 0, 0, 1], server.port())))
    }

    #[test]
    fn restarts_on_the_same_port_and_store() {
        let mut nats = NatsServer::start().unwrap();
        probe(&nats).unwrap();
        assert!(nats.store_dir().starts_with(std::env::temp_dir()));

        let port = nats.port();
        nats.stop();
        assert!(!nats.is_running());
        assert!(probe(&nats).is_err());

        nats.start_again().unwrap();
        assert_eq!(nats.port(), port);
        probe(&nats).unwrap();
        assert!(
            nats.start_again().is_err(),
            "a running server cannot start again"
        );

        nats.kill();
        assert!(probe(&nats).is_err());
        nats.start_again().unwrap();
        probe(&nats).unwrap();
    }

    #[test]
    fn keeps_a_given_store_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("nats");
        let port = free_port();
        {
            let nats = NatsServer::start_in(&store, port).unwrap();
            assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
            probe(&nats).unwrap();
        }
        assert!(
            store.join("jetstream").is_dir(),
            "store outlives the server"
        );
        let temp_store = {
            let nats = NatsServer::start().unwrap();
            nats.store_dir().to_path_buf()
        };
        assert!(!temp_store.exists(), "a temp server removes its dir");
    }
}
