use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xenios_contract::JobKind;

/// The Xenios document extraction consumer: serves `jobs.extraction` (and `jobs.echo`).
#[derive(Parser)]
#[command(name = "xenios-extractor", version)]
struct Args {
    /// Configuration file (default: $XENIOS_CONFIG, else ./xenios.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    xenios_cli::consumer_main(
        "xenios-extractor",
        &[JobKind::Extraction],
        Args::parse().config,
    )
    .await
}
