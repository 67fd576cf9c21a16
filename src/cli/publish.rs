//! `tern pub SUBJECT [MESSAGE]`.

use std::io::BufRead;

use anyhow::{anyhow, bail};
use clap::Args;
use tern_client::{Client, OutgoingMessage, Role};

use super::{connect, parse_header, ServerArg};

/// Arguments of `tern pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Subject to publish to (literal, no wildcards)
    subject: String,
    /// The message; without it, each line of stdin is published as one message
    message: Option<String>,
    /// Add a header (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Wait for the broker to accept each message; exit non-zero if it refuses one
    #[arg(long)]
    confirm: bool,
}

/// Publishes and exits.
pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let client = connect(&args.server, "tern-pub", Role::Producer, false).await?;
    match &args.message {
        Some(message) => publish_one(&client, &args, message.clone()).await?,
        None => {
            for line in std::io::stdin().lock().lines() {
                publish_one(&client, &args, line?).await?;
            }
        }
    }
    client.flush().await.map_err(|error| anyhow!("{error}"))?;
    client.close().await;
    Ok(())
}

async fn publish_one(client: &Client, args: &PubArgs, payload: String) -> anyhow::Result<()> {
    let mut message = OutgoingMessage::new(args.subject.clone(), payload);
    for (name, value) in &args.headers {
        message = message.header(name.as_str(), value.as_str());
    }
    let result = if args.confirm {
        client.send_confirmed(message).await
    } else {
        client.send(message).await
    };
    if let Err(error) = result {
        bail!("publish to `{}` failed: {error}", args.subject);
    }
    Ok(())
}
