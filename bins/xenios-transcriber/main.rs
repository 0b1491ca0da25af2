use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xenios_contract::JobKind;

/// The Xenios transcription consumer: serves `jobs.transcription` (and `jobs.echo`).
#[derive(Parser)]
#[command(name = "xenios-transcriber", version)]
struct Args {
    /// Configuration file (default: $XENIOS_CONFIG, else ./xenios.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    xenios_cli::consumer_main(
        "xenios-transcriber",
        &[JobKind::Transcription],
        Args::parse().config,
    )
    .await
}
