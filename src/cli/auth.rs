//! `tern auth token`: a fresh token for `AUTH_FILE`. The first line is the token
//! (give it to the client: `--token`, `TERN_TOKEN`, `ClientOptions::token`); the
//! second is the `token_sha256 = "..."` line for the user's entry in the auth
//! file, which stores only the hash.

use clap::Subcommand;

/// `tern auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print a new random token and, on the next line, its token_sha256 line for AUTH_FILE
    Token,
}

/// Runs an auth subcommand.
pub fn run(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Token => {
            let (token, line) = tern_broker::security::auth_file::generate_token()?;
            super::print_line(token.as_bytes())?;
            super::print_line(line.as_bytes())?;
            Ok(())
        }
    }
}
