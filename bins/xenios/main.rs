use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    xenios_cli::xenios_main().await
}
