//! `tern serve`: configuration → logging → runtime → [`Server`].

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, ServeArgs};
use crate::{shutdown, Server};

/// Exit code for configuration errors (as for bad command-line usage).
pub const EXIT_CONFIG: u8 = 2;

/// Runs the broker until SIGTERM/SIGINT and a clean drain.
pub fn run(args: ServeArgs) -> ExitCode {
    // Values that are not UTF-8 are passed on lossily; they then fail to parse and the
    // error names the variable.
    let environment = std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    });
    let config = match Config::from_sources(environment, &args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tern: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!(
                "tern: configuration error: invalid value `{}` for RUST_LOG: {error}",
                config.log_filter
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tern: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(config).await?;
        let stop = CancellationToken::new();
        shutdown::cancel_on_signal(stop.clone());
        server.run(stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tern: {error}");
            ExitCode::FAILURE
        }
    }
}
