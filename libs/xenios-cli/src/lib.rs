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

/// glibc's malloc and free were about a fifth of the API's CPU samples under load; with
/// mimalloc's per-thread pages an echo job costs the API and the worker about a tenth less CPU
/// (bench/results/2026-12-06-experiments). Built with `no_thp`: asking for transparent huge
/// pages, as it does by default, added 10–25 MB of resident memory per process for nothing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
