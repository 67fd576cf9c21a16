//! `tern req SUBJECT MESSAGE [--timeout SECS]`.

use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use tern_client::{ClientError, Role};

use super::{connect, print_line, ServerArg};

/// Arguments of `tern req`.
#[derive(Debug, Args)]
pub struct ReqArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Subject to send the request to
    subject: String,
    /// The request payload
    message: String,
    /// Seconds to wait for a reply
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Sends one request and prints the reply.
pub async fn run(args: ReqArgs) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| anyhow!("--timeout must be a positive number of seconds"))?;
    let client = connect(&args.server, "tern-req", Role::Both, false).await?;
    match client.request(&args.subject, args.message, wait).await {
        Ok(reply) => {
            print_line(reply.payload())?;
            client.close().await;
            Ok(())
        }
        Err(ClientError::Timeout) => Err(anyhow!(
            "no reply on `{}` within {} s",
            args.subject,
            args.timeout
        )),
        Err(error) => Err(anyhow!("{error}")),
    }
}
