//! Private instances of the services the fleet talks to, started as child processes on free
//! loopback ports with their data in a temp dir, and stopped on drop. `xenios dev` uses the
//! NATS half; the tests use both. Nothing here ever touches a machine's default instances.

mod nats;
mod operator;
mod pki;
mod port;
mod postgres;

pub use nats::{NatsServer, ServerOptions, ServerTls};
pub use operator::TestOperator;
pub use pki::TestPki;
pub use port::free_port;
pub use postgres::{test_database_url, PgServer};
