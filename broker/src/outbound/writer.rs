//! The batching writer: one task per connection that swaps out everything pending
//! and writes it with one `write` (or `writev`) per batch, then counts what it wrote.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tern_proto::Frame;
use tokio::io::AsyncWriteExt;

use crate::transport::TransportWriter;
use tracing::{debug, warn};

use super::write_buffer::{WriteBuffer, WriteFailure};
use super::{Outbox, Pending, IDLE_BUFFER_BYTES, IDLE_RELEASE_AFTER};
use crate::clock::{stamp_elapsed_seconds, stamp_since};
use crate::stats::Stats;

/// How a writer task ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriterExit {
    /// Asked to close.
    Closed,
    /// Writing to the socket failed (the client went away).
    Failed(std::io::Error),
    /// A write did not complete within the write deadline (`WRITE_DEADLINE_MS`).
    TimedOut,
}

/// Marks the outbox's writer as gone however the writer ends (returns, or its task
/// is aborted), so queues stop delivering to it.
struct WriterGuard<'a>(&'a Outbox);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.0.writer_ended();
    }
}

/// Drains an outbox into the socket until closed: swaps out everything pending and
/// writes it, one `write` per batch. A write that blocks longer than
/// `write_deadline` ends the connection: a client that reads nothing cannot pin its
/// resources forever (nats-server's default is 10 s too).
pub async fn run_writer<W: TransportWriter>(
    mut socket: W,
    outbox: Arc<Outbox>,
    write_deadline: Duration,
) -> WriterExit {
    let _guard = WriterGuard(&outbox);
    let mut batch = Pending::default();
    loop {
        if !outbox.take_pending(&mut batch) {
            if outbox.holds_large_buffers(&batch)
                && tokio::time::timeout(IDLE_RELEASE_AFTER, outbox.wake_writer.notified())
                    .await
                    .is_ok()
            {
                continue;
            }
            outbox.release_idle_buffers(&mut batch);
            outbox.wake_writer.notified().await;
            continue;
        }
        // Once per batch, after the deliveries: a drop that happens later sets the
        // flag again and wakes the writer.
        for (sid, missed) in outbox.lag.take_reports() {
            batch.frames.frame(&Frame::Lagged { sid, missed });
        }
        let length = batch.frames.len();
        let result = batch
            .frames
            .write_to(&mut socket, &outbox.flow, write_deadline)
            .await;
        batch.frames.clear();
        Stats::add(&outbox.stats.bytes_out, length as u64);
        outbox
            .sent_bytes
            .fetch_add(length as u64, Ordering::Relaxed);
        outbox.written(&mut batch);
        match result {
            Ok(()) => {}
            Err(WriteFailure::Io(error)) => {
                debug!(connection = outbox.connection_id, %error, "write failed");
                return WriterExit::Failed(error);
            }
            Err(WriteFailure::Deadline) => {
                warn!(
                    connection = outbox.connection_id,
                    deadline_ms = write_deadline.as_millis() as u64,
                    "slow consumer: write deadline exceeded, closing"
                );
                return WriterExit::TimedOut;
            }
        }
        if batch.close_requested {
            let _ = socket.shutdown().await;
            return WriterExit::Closed;
        }
    }
}

impl Outbox {
    /// Moves everything pending into `batch` (whose buffers are empty), or returns
    /// `false` having marked the writer idle when there is nothing to write.
    pub(super) fn take_pending(&self, batch: &mut Pending) -> bool {
        let mut pending = self.lock_pending();
        if pending.frames.is_empty() && !pending.close_requested && !self.lag.has_lagged() {
            pending.writer_idle = true;
            return false;
        }
        std::mem::swap(&mut pending.frames, &mut batch.frames);
        self.flow.batch_taken(batch.frames.len());
        std::mem::swap(&mut pending.samples, &mut batch.samples);
        batch.broadcast = std::mem::take(&mut pending.broadcast);
        batch.queued = std::mem::take(&mut pending.queued);
        batch.redelivered = std::mem::take(&mut pending.redelivered);
        batch.control_permits = std::mem::take(&mut pending.control_permits);
        batch.close_requested = pending.close_requested;
        true
    }

    /// Called when a batch has been written: frees its room and counts it.
    fn written(&self, batch: &mut Pending) {
        let written = std::mem::take(&mut batch.broadcast);
        self.flow.batch_written(written);
        self.control_room
            .give_back(std::mem::take(&mut batch.control_permits));
        let queued = std::mem::take(&mut batch.queued);
        Stats::add(&self.stats.delivered_broadcast, written as u64);
        Stats::add(&self.stats.delivered_queue, queued);
        Stats::add(
            &self.stats.redelivered,
            std::mem::take(&mut batch.redelivered),
        );
        self.sent_messages
            .fetch_add(written as u64 + queued, Ordering::Relaxed);
        if !batch.samples.is_empty() {
            // One clock read per batch, after the write: the latency a client sees.
            let now = stamp_since(self.epoch);
            for (mode, stamp) in batch.samples.drain(..) {
                self.stats
                    .observe_latency(mode, stamp_elapsed_seconds(stamp, now));
            }
        }
    }

    /// Whether the writer holds buffers worth releasing when idle.
    fn holds_large_buffers(&self, batch: &Pending) -> bool {
        batch.frames.bytes.capacity() > IDLE_BUFFER_BYTES
            || self.lock_pending().frames.bytes.capacity() > IDLE_BUFFER_BYTES
    }

    /// Releases the large buffers of a writer that stayed idle.
    fn release_idle_buffers(&self, batch: &mut Pending) {
        if batch.frames.bytes.capacity() > IDLE_BUFFER_BYTES {
            batch.frames = WriteBuffer::default();
        }
        let mut pending = self.lock_pending();
        if pending.frames.is_empty() && pending.frames.bytes.capacity() > IDLE_BUFFER_BYTES {
            pending.frames = WriteBuffer::default();
        }
    }

    /// Marks the writer as gone and releases what was still pending.
    pub(super) fn writer_ended(&self) {
        let mut pending = self.lock_pending();
        pending.writer_gone = true;
        pending.frames = WriteBuffer::default();
        pending.samples = Vec::new();
    }
}
