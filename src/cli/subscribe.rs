//! `tern sub PATTERN [--filter FILTER] [--queue NAME] [--count N] [--headers]`.

use anyhow::{anyhow, bail};
use clap::Args;
use tern_client::{Message, Role};

use super::{connect, print_line, ServerArg};

/// Arguments of `tern sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Subject pattern (`*` matches one token, `>` the rest)
    pattern: String,
    /// Consume from queue NAME (bound to PATTERN) instead of broadcast; deliveries are acked
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Only messages whose headers match, e.g. "profile_id = 'u1' AND device_id = 'd1'"
    #[arg(long, value_name = "FILTER")]
    filter: Option<String>,
    /// Most unacked queue deliveries held at once (0 = broker default)
    #[arg(long, default_value_t = 0)]
    prefetch: u32,
    /// Exit 0 after N messages
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print each message's headers (`name: value` lines) before its payload
    #[arg(long)]
    headers: bool,
}

/// Prints messages until the count is reached or the connection ends.
pub async fn run(args: SubArgs) -> anyhow::Result<()> {
    let client = connect(&args.server, "tern-sub", Role::Consumer, true).await?;
    let mut printed = 0u64;
    let done = |printed: u64| args.count.is_some_and(|count| printed >= count);
    if done(printed) {
        return Ok(());
    }
    match &args.queue {
        None => {
            let subscribed = match &args.filter {
                Some(filter) => client.subscribe_filtered(&args.pattern, filter).await,
                None => client.subscribe(&args.pattern).await,
            };
            let mut subscription = subscribed.map_err(|error| anyhow!("{error}"))?;
            while let Some(message) = subscription.next().await {
                if !print_message(&message, args.headers)? {
                    return Ok(());
                }
                printed += 1;
                if done(printed) {
                    return Ok(());
                }
            }
        }
        Some(queue) => {
            let subscribed = match &args.filter {
                Some(filter) => {
                    client
                        .queue_subscribe_filtered(queue, &args.pattern, args.prefetch, filter)
                        .await
                }
                None => {
                    client
                        .queue_subscribe_bound(queue, &args.pattern, args.prefetch)
                        .await
                }
            };
            let mut subscription = subscribed.map_err(|error| anyhow!("{error}"))?;
            while let Some(delivery) = subscription.next().await {
                let open = print_message(delivery.message(), args.headers)?;
                delivery
                    .ack()
                    .await
                    .map_err(|error| anyhow!("ack failed: {error}"))?;
                if !open {
                    return Ok(());
                }
                printed += 1;
                if done(printed) {
                    client.flush().await.map_err(|error| anyhow!("{error}"))?;
                    return Ok(());
                }
            }
        }
    }
    bail!("connection to the broker closed")
}

fn print_message(message: &Message, with_headers: bool) -> anyhow::Result<bool> {
    if with_headers {
        for (name, value) in message.headers() {
            if !print_line(format!("{name}: {value}").as_bytes())? {
                return Ok(false);
            }
        }
    }
    Ok(print_line(message.payload())?)
}
