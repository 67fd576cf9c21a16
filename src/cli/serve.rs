//! `tern serve`: flags (one per declared setting) → configuration → logging →
//! runtime → [`Server`].

use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command};
use tern_broker::config::{env, Config, Flags, LogFormat, SETTINGS};
use tern_broker::{Server, ServerError};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::signals;

/// Exit code for configuration errors (as for bad command-line usage).
pub const EXIT_CONFIG: u8 = 2;

/// `tern serve` flags: one per setting of [`SETTINGS`], each overriding its
/// environment variable. Generated from the declarations, so a new setting gets
/// its flag and its `--help` line without another edit.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    flags: Flags,
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<String>(setting.flag) {
                flags.set(setting.env, value.clone());
            }
        }
        Ok(ServeArgs { flags })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        SETTINGS.iter().fold(command, |command, setting| {
            command.arg(
                Arg::new(setting.flag)
                    .long(setting.flag)
                    .value_name(setting.value_name)
                    .help(setting.flag_help()),
            )
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        ServeArgs::augment_args(command)
    }
}

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
    let config = match Config::from_sources(environment, &args.flags) {
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
                "tern: configuration error: invalid value `{}` for {}: {error}",
                config.log_filter,
                env::RUST_LOG
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
    raise_open_file_limit();
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
        signals::cancel_on_signal(stop.clone());
        signals::reload_on_hangup(server.broker());
        server.run(stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ (ServerError::Store { .. } | ServerError::Security(_))) => {
            eprintln!("tern: configuration error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("tern: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every connection (and
/// every HTTP request) is a file descriptor, and the usual soft limit of 1,024 is
/// far below `MAX_CONNECTIONS`. Logged either way; failing is not fatal.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn every_flag_help_names_its_variable_and_default() {
        let command = Wrapper::command();
        for setting in SETTINGS {
            let argument = command
                .get_arguments()
                .find(|argument| argument.get_long() == Some(setting.flag))
                .unwrap_or_else(|| panic!("no --{} flag", setting.flag));
            let help = argument
                .get_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains(&format!("[env: {}]", setting.env)),
                "--{}: {help}",
                setting.flag
            );
            assert!(
                help.contains(&format!("[default: {}]", setting.default)),
                "--{}: {help}",
                setting.flag
            );
            assert!(
                help.contains(&(setting.expected)()),
                "--{} states what it accepts: {help}",
                setting.flag
            );
        }
    }

    #[test]
    fn a_flag_reaches_its_setting() {
        let parsed = Wrapper::try_parse_from(["serve", "--tcp-port", "7001", "--log", "debug"])
            .expect("flags parse");
        let config = Config::from_sources(std::iter::empty(), &parsed.serve.flags).expect("valid");
        assert_eq!(config.tcp_port, 7001);
        assert_eq!(config.log_filter, "debug");
    }

    #[test]
    fn the_readme_table_lists_every_setting_with_its_flag_and_default() {
        let readme = include_str!("../../README.md");
        for setting in SETTINGS {
            let default = if setting.default.is_empty() {
                "unset".to_owned()
            } else {
                format!("`{}`", setting.default)
            };
            let row = format!("| `{}` | `--{}` | {default} |", setting.env, setting.flag);
            assert!(readme.contains(&row), "README.md lacks the row `{row}`");
        }
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let example = include_str!("../../.env.example");
        for setting in SETTINGS {
            let line = format!("{}={}", setting.env, setting.default);
            assert!(
                example.lines().any(|l| l.trim() == line),
                ".env.example lacks `{line}`"
            );
        }
    }
}
