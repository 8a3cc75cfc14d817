//! `cargo run -p service`: the service, configured by the environment (see
//! `service::settings::Settings`).

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = match service::settings::Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("service: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match service::run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("service: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
