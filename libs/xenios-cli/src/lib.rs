//! What the binaries in `bins/` do. Each binary's `main` is one call into here, so the same
//! start-up code is what `xenios dev` and the tests run.

mod commands;
mod jobs;
mod start;
mod users;

pub use commands::xenios_main;
pub use start::{
    api_main, connect_nats, connect_store, consumer_main, known_kinds, runtime_for, serve_all,
    serve_worker, shutdown_signal, spawn_sweeper, stream_settings,
};
