//! `tern reply SUBJECT [RESPONSE] [--queue NAME] [--count N]`.

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::Args;
use tern_client::{Client, Message, Role};

use super::{connect, ServerArg};

/// Arguments of `tern reply`.
#[derive(Debug, Args)]
pub struct ReplyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Subject (or pattern) to answer requests on
    subject: String,
    /// The response; without it, each request's payload is echoed back
    response: Option<String>,
    /// Share the work with other responders through queue NAME
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Exit 0 after answering N requests
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Answers requests until the count is reached or the connection ends.
pub async fn run(args: ReplyArgs) -> anyhow::Result<()> {
    let client = connect(&args.server, "tern-reply", Role::Both, true).await?;
    let response = args.response.clone().map(Bytes::from);
    let mut answered = 0u64;
    let done = |answered: u64| args.count.is_some_and(|count| answered >= count);
    match &args.queue {
        None => {
            let mut requests = client
                .subscribe(&args.subject)
                .await
                .map_err(|error| anyhow!("{error}"))?;
            while let Some(request) = requests.next().await {
                answer(&client, &request, &response).await?;
                answered += 1;
                if done(answered) {
                    break;
                }
            }
        }
        Some(queue) => {
            let mut requests = client
                .queue_subscribe_bound(queue, &args.subject, 0)
                .await
                .map_err(|error| anyhow!("{error}"))?;
            while let Some(request) = requests.next().await {
                answer(&client, request.message(), &response).await?;
                request
                    .ack()
                    .await
                    .map_err(|error| anyhow!("ack failed: {error}"))?;
                answered += 1;
                if done(answered) {
                    break;
                }
            }
        }
    }
    if done(answered) {
        client.close().await;
        return Ok(());
    }
    bail!("connection to the broker closed")
}

async fn answer(
    client: &Client,
    request: &Message,
    response: &Option<Bytes>,
) -> anyhow::Result<()> {
    if request.reply_to().is_none() {
        return Ok(());
    }
    let payload = response.clone().unwrap_or_else(|| request.payload_bytes());
    client
        .respond(request, payload)
        .await
        .map_err(|error| anyhow!("reply failed: {error}"))
}
