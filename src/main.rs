//! The `tern` command: `tern serve` runs the broker (crate `tern-broker`); the other
//! subcommands are small clients on the SDK (`tern-client`), the health check and
//! `tern bench`. Everything here is command-line plumbing; see [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
