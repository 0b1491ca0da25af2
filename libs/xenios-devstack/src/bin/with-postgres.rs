//! `with-postgres [--durable] -- CMD ARGS…`: runs CMD with a private PostgreSQL server started
//! on a free port in a temp dir, its admin URL in `XENIOS_TEST_POSTGRES_URL`; stops the server
//! after. `make test` wraps the test run in it; `make bench` adds `--durable`, so commits are
//! synced as in production rather than not at all.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let durable = std::env::args()
        .take_while(|a| a != "--")
        .any(|a| a == "--durable");
    let args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: with-postgres [--durable] -- COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let started = if durable {
        xenios_devstack::PgServer::start_durable()
    } else {
        xenios_devstack::PgServer::start()
    };
    let server = match started {
        Ok(server) => server,
        Err(e) => {
            eprintln!("with-postgres: cannot start PostgreSQL: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("with-postgres: private PostgreSQL at {}", server.url());
    let status = Command::new(program)
        .args(rest)
        .env("XENIOS_TEST_POSTGRES_URL", server.url())
        .status();
    drop(server);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("with-postgres: cannot run {program}: {e}");
            ExitCode::FAILURE
        }
    }
}
