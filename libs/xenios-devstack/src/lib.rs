//! Private instances of the services the fleet talks to, started as child processes on free
//! loopback ports with their data in a temp dir, and stopped on drop. `xenios dev` uses the
//! NATS half; the tests use both. Nothing here ever touches a machine's default instances.

mod nats;
mod operator;
mod pgbouncer;
mod pki;
mod port;
mod postgres;
mod process;

pub use nats::{NatsServer, ServerOptions, ServerTls};
pub use operator::TestOperator;
pub use pgbouncer::{Pgbouncer, PgbouncerOptions};
pub use pki::TestPki;
pub use port::free_port;
pub use postgres::{test_database_url, PgOptions, PgServer};

/// A server program as Debian installs it (in /usr/sbin, which a user's PATH may lack), else
/// the first on PATH.
pub(crate) fn find_program(name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let packaged = std::path::Path::new("/usr/sbin").join(name);
    if packaged.exists() {
        return Ok(packaged);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("no {name} binary: neither /usr/sbin/{name} nor one on PATH"))
}
