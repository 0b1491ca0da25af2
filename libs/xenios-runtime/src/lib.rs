//! The consumer runtime: one implementation of the job lifecycle on JetStream that every
//! consumer binary runs with its own [`Handler`]s. Handlers return data
//! (`Ok(result) | Err(Transient | Permanent)`); the runtime alone decides ack, NAK, TERM,
//! retry and dead-lettering, after the outcome is stored.

mod dead_letter;
mod echo;
mod files;
mod handler;
mod metrics_server;
mod periodic;
mod publish;
pub mod retention;
mod runtime;
pub mod sweeper;
mod workers;

pub use echo::EchoHandler;
pub use files::StoredFile;
pub use handler::{Handler, HandlerError, HandlerResult, JobContext};
pub use metrics_server::serve_metrics;
pub use runtime::{Runtime, RuntimeError};
