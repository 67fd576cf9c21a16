//! The connection's life: run it until it drops, then reconnect per the
//! [`ReconnectPolicy`](crate::ReconnectPolicy) (backoff with jitter), resubscribe
//! and resend what was buffered; end every subscription once the client closes or
//! gives up.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::connection::{open, BrokerStream, Established};
use super::inner::Inner;
use super::reader::read_loop;
use super::writer::write_loop;
use tern_proto::read_buffer::ReadSource;
use tokio::io::AsyncWrite;

/// Frames from the broker may be a little larger than what it accepts from clients
/// (DELIVER carries more fields than PUBLISH). PROTOCOL.md §1 states the margin a
/// client must allow.
const SERVER_FRAME_SLACK: u32 = 64 * 1024;

/// Owns the connection's life: run it, and on loss reconnect per the policy.
pub(super) async fn drive(inner: Arc<Inner>, first: Established) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    loop {
        let established = match next.take() {
            Some(established) => established,
            None => {
                let policy = &inner.options.reconnect;
                if inner.closed.load(Ordering::Acquire)
                    || !policy.enabled
                    || policy.max_attempts.is_some_and(|max| attempt >= max)
                {
                    break;
                }
                let delay = policy.delay(attempt);
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = inner.close_requested.notified() => break,
                }
                match open(&inner.address, &inner.options).await {
                    Ok(established) => {
                        info!(address = %inner.address, "reconnected");
                        inner.on_connected(&established.welcome);
                        attempt = 0;
                        established
                    }
                    Err(error) => {
                        debug!(address = %inner.address, %error, attempt, "reconnect failed");
                        continue;
                    }
                }
            }
        };
        let max_frame = established
            .welcome
            .max_frame_bytes
            .saturating_add(SERVER_FRAME_SLACK);
        let closing = match established.stream {
            BrokerStream::Plain(stream) => {
                let (read_half, write_half) = stream.into_split();
                run(
                    &inner,
                    read_half,
                    write_half,
                    established.leftover,
                    max_frame,
                )
                .await
            }
            BrokerStream::Tls(stream) => {
                let (read_half, write_half) = tokio::io::split(*stream);
                run(
                    &inner,
                    read_half,
                    write_half,
                    established.leftover,
                    max_frame,
                )
                .await
            }
        };
        inner.on_disconnected();
        if closing || inner.closed.load(Ordering::Acquire) {
            break;
        }
        warn!(address = %inner.address, "disconnected from the broker; reconnecting");
    }
    inner.on_closed();
}

/// Runs one connection until it drops (`false`) or the client closes (`true`).
async fn run<R: ReadSource, W: AsyncWrite + Unpin>(
    inner: &Arc<Inner>,
    read_half: R,
    mut write_half: W,
    leftover: bytes::BytesMut,
    max_frame: u32,
) -> bool {
    {
        let closing = tokio::select! {
            result = read_loop(inner, read_half, leftover, max_frame) => {
                debug!(?result, "connection lost (read side)");
                false
            }
            result = write_loop(inner, &mut write_half) => match result {
                // The writer only returns Ok once a close was requested and everything
                // buffered before it has been written.
                Ok(()) => true,
                Err(error) => {
                    debug!(%error, "connection lost (write side)");
                    false
                }
            },
        };
        if closing {
            let _ = write_half.shutdown().await;
        }
        closing
    }
}
