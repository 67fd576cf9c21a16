//! The writer: swaps the shared outgoing buffer for its own empty one and writes it
//! with one `write_all`, so a burst of publishes costs a few syscalls.

use std::sync::atomic::Ordering;

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::inner::Inner;
use crate::error::ClientError;

/// A writer idle for [`IDLE_RELEASE_AFTER`] keeps at most this much spare buffer
/// capacity.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// How long the writer, or the reader, must be idle before releasing its buffers.
pub(crate) const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Writes whatever is buffered, one `write_all` per batch: swaps the shared buffer
/// for its own empty spare, so neither side reallocates. Returns `Ok` only when a
/// close was requested and the buffer is empty, so buffered acks and publishes are
/// not lost by closing.
pub(super) async fn write_loop(
    inner: &Inner,
    socket: &mut (impl AsyncWrite + Unpin),
) -> Result<(), ClientError> {
    let mut batch = BytesMut::new();
    loop {
        let idle = {
            let mut state = inner.lock_state();
            if state.buffer.is_empty() {
                state.writer_idle = true;
                true
            } else {
                std::mem::swap(&mut state.buffer, &mut batch);
                false
            }
        };
        if !idle {
            inner.room.notify_waiters();
            socket.write_all(&batch).await?;
            // TLS keeps records until flushed (a no-op for TCP).
            socket.flush().await?;
            batch.clear();
        } else if inner.closed.load(Ordering::Acquire) {
            return Ok(());
        } else if batch.capacity() > IDLE_BUFFER_BYTES {
            // Released only after a while idle: a writer that catches up with its
            // publishers is idle many times a second.
            if timeout(IDLE_RELEASE_AFTER, inner.wake_writer.notified())
                .await
                .is_err()
            {
                batch = BytesMut::new();
            }
        } else {
            inner.wake_writer.notified().await;
        }
    }
}
