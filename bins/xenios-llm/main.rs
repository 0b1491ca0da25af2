use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xenios_contract::JobKind;

/// The Xenios LLM consumer: serves `jobs.llm` (and `jobs.echo`).
#[derive(Parser)]
#[command(name = "xenios-llm", version)]
struct Args {
    /// Configuration file (default: $XENIOS_CONFIG, else ./xenios.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    xenios_cli::consumer_main("xenios-llm", &[JobKind::Llm], Args::parse().config).await
}
