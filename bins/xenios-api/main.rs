use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Xenios HTTP API.
#[derive(Parser)]
#[command(name = "xenios-api", version)]
struct Args {
    /// Configuration file (default: $XENIOS_CONFIG, else ./xenios.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    xenios_cli::api_main(Args::parse().config).await
}
