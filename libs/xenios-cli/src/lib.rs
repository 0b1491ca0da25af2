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

/// An error and its causes on one line, as `{:#}` gives them, less each cause whose message
/// the line already holds: sqlx's and the store's errors print their source in their own
/// message too, and a TLS failure read "… BadSignature: … BadSignature: … BadSignature".
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if line.contains(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
    }
    line
}

/// glibc's malloc and free were about a fifth of the API's CPU samples under load; with
/// mimalloc's per-thread pages an echo job costs the API and the worker about a tenth less CPU
/// (bench/results/2026-12-06-experiments). Built with `no_thp`: asking for transparent huge
/// pages, as it does by default, added 10–25 MB of resident memory per process for nothing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_told_are_not_repeated() {
        let io = std::io::Error::other("invalid peer certificate: BadSignature");
        let store = anyhow::Error::new(io)
            .context("database unavailable: invalid peer certificate: BadSignature")
            .context("cannot open the database postgres://db");
        assert_eq!(
            one_line(&store),
            "cannot open the database postgres://db: database unavailable: invalid peer \
             certificate: BadSignature"
        );
        let plain = anyhow::anyhow!("refused").context("cannot connect");
        assert_eq!(one_line(&plain), "cannot connect: refused");
    }
}
