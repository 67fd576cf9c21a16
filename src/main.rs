//! The `tern` binary: parses the command line and hands over to [`tern::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tern::cli::run(tern::cli::Cli::parse())
}
