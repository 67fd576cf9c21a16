//! `tern relay`: the throughput ceiling for `tern bench --target relay://…`.
//!
//! The least a broker could do: accept a receiver, then a sender, and copy the
//! sender's bytes (length-prefixed frames) to the receiver, one read and one write
//! per chunk. No parsing, routing or fan-out, so no broker can beat it; its numbers
//! say how close Tern is to the limit of the machine and the kernel.

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Bytes read per syscall.
const CHUNK_BYTES: usize = 256 * 1024;

/// Arguments of `tern relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
}

/// Pairs connections in accept order (receiver first, then sender) and copies each
/// sender to its receiver until either closes.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("tern relay listening on {}", listener.local_addr()?);
    loop {
        let (mut receiver, _) = listener.accept().await?;
        let (mut sender, _) = listener.accept().await?;
        receiver.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buffer = vec![0u8; CHUNK_BYTES];
            loop {
                match sender.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        if receiver.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = receiver.shutdown().await;
        });
    }
}
