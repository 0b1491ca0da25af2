//! Starting and stopping a server as a child process, the same for each kind.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Starts `command` with no input and its output appended to `log`, which tells why a server
/// refused to start or a client.
pub(crate) fn spawn_logged(command: &mut Command, log: &Path) -> std::io::Result<Child> {
    let log = File::options().create(true).append(true).open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// Sends `signal` (`INT`, `TERM`, …) and waits up to `within` for the process to exit, then
/// kills it. `true` if it exited on the signal.
pub(crate) fn stop_child(mut child: Child, signal: &str, within: Duration) -> bool {
    let signalled = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if signalled {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => thread::sleep(POLL_INTERVAL),
                Err(_) => break,
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
