//! `tern queue ls | purge NAME | delete NAME [--force]`: queue administration over
//! the protocol (QUEUE_LIST, QUEUE_PURGE, QUEUE_DELETE).

use anyhow::anyhow;
use clap::{Args, Subcommand};
use tern_client::Role;

use super::ServerArg;

/// Arguments of `tern queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    server: ServerArg,
    /// What to do.
    #[command(subcommand)]
    action: QueueAction,
}

/// The queue subcommands.
#[derive(Debug, Subcommand)]
enum QueueAction {
    /// List every queue: name, binding, ready, unacked, consumers, bytes.
    Ls,
    /// Remove a queue's ready messages (unacked deliveries stay with their consumers).
    Purge {
        /// The queue.
        name: String,
    },
    /// Delete a queue and everything it holds.
    Delete {
        /// The queue.
        name: String,
        /// Delete it even while consumers are attached (their subscriptions end).
        #[arg(long)]
        force: bool,
    },
}

/// Runs the subcommand; prints what it did on stdout.
pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let client = super::connect(&args.server, "tern-queue", Role::Both, false).await?;
    let outcome = match args.action {
        QueueAction::Ls => list(&client).await,
        QueueAction::Purge { name } => {
            let removed = client
                .purge_queue(&name)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            super::print_line(format!("purged {removed} message(s) from {name}").as_bytes())?;
            Ok(())
        }
        QueueAction::Delete { name, force } => {
            let dropped = client
                .delete_queue(&name, force)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            super::print_line(format!("deleted {name} with {dropped} message(s)").as_bytes())?;
            Ok(())
        }
    };
    client.close().await;
    outcome
}

async fn list(client: &tern_client::Client) -> anyhow::Result<()> {
    let queues = client.queues().await.map_err(|e| anyhow!("{e}"))?;
    let name_width = queues
        .iter()
        .map(|q| q.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let pattern_width = queues
        .iter()
        .map(|q| q.pattern.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let row = |cells: [&dyn std::fmt::Display; 6]| {
        let [name, pattern, ready, unacked, consumers, bytes] = cells;
        format!(
            "{name:name_width$}  {pattern:pattern_width$}  {ready:>10}  {unacked:>10}  {consumers:>9}  {bytes:>12}"
        )
    };
    super::print_line(
        row([
            &"NAME",
            &"BINDING",
            &"READY",
            &"UNACKED",
            &"CONSUMERS",
            &"BYTES",
        ])
        .as_bytes(),
    )?;
    for queue in &queues {
        let line = row([
            &queue.name,
            &queue.pattern,
            &queue.ready,
            &queue.unacked,
            &queue.consumers,
            &queue.bytes,
        ]);
        if !super::print_line(line.as_bytes())? {
            break;
        }
    }
    Ok(())
}
