//! A connection's outbound side: a bounded outbox and the task that writes it.
//!
//! Three kinds of frames reach a client, each bounded differently:
//! - broadcast deliveries, pushed by any publisher's task: at most
//!   `CONSUMER_CHANNEL_BUFFER_SIZE` wait at once; beyond that they are dropped for
//!   this connection only, counted per subscription, reported with LAGGED, and a
//!   rate-limited warning is logged. Before it comes to that, flow control: once
//!   half the buffer is used, the publishers feeding it pause reading their sockets
//!   between read batches while the subscriber drains it (to a quarter), so a
//!   subscriber that is slower than its publishers but still reading slows them
//!   down instead of losing messages. A subscriber that makes no progress for
//!   [`STALL_LIMIT`] is marked stalled: publishers stop waiting for it and its
//!   messages are dropped (and reported) until it has drained its buffer, so one
//!   stuck subscriber cannot hold publishers back.
//! - queue deliveries: bounded by the prefetch windows of the connection's queue
//!   subscriptions, so they are never dropped.
//! - control frames answering the client's own requests (PUBLISH_OK, ERROR, PONG):
//!   bounded by [`CONTROL_FRAME_LIMIT`]; when a client does not read its answers,
//!   the session stops reading its requests (backpressure on that client only).
//!
//! The writer drains everything waiting into one buffer and writes it with one
//! `write_all`: under load, one syscall carries a whole batch of frames.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tern_proto::{codec, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::{debug, warn};

use crate::stats::{stamp_elapsed_seconds, stamp_from_micros, Stamp, Stats};
use tern_proto::DeliveryMode;
use tern_proto::Message;

/// Control frames that may wait for the writer before the session stops reading
/// the client's requests.
pub const CONTROL_FRAME_LIMIT: usize = 1024;

/// Most items the writer takes from the outbox per batch.
const BATCH_LIMIT: usize = 1024;

/// The writer writes as soon as this many bytes are encoded, so a batch of large
/// messages does not build one huge buffer.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// An idle writer keeps at most this much buffer capacity; above it the buffer is
/// released, so idle connections cost little memory.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;

/// How long a publisher waits for a subscriber's writer to make any progress before
/// treating that subscriber as stalled.
pub const STALL_LIMIT: Duration = Duration::from_millis(100);

/// What became of a broadcast delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and the buffer is over half full: the publisher should let it drain.
    QueuedUnderPressure,
    /// Dropped: the buffer was full (counted, reported with LAGGED).
    Dropped,
}

/// Minimum time between two slow-consumer warnings for one connection.
const LAG_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Something waiting to be written to the client.
#[derive(Debug)]
pub enum Outbound {
    /// A broadcast delivery.
    Broadcast {
        /// The subscription it is for.
        sid: u32,
        /// Publish time of a latency sample, or 0.
        stamp: Stamp,
        /// The shared message.
        message: Arc<Message>,
    },
    /// A queue delivery that must be acked.
    Queued {
        /// The subscription it is for.
        sid: u32,
        /// Publish time of a latency sample, or 0.
        stamp: Stamp,
        /// The id to ack.
        delivery_id: u64,
        /// Delivered before?
        redelivered: bool,
        /// The shared message.
        message: Arc<Message>,
    },
    /// A control frame answering the client.
    Control {
        /// The frame, boxed: control frames are rare and large, deliveries are
        /// frequent and small, and every item is moved several times.
        frame: Box<Frame>,
        /// Whether it holds one of the [`CONTROL_FRAME_LIMIT`] permits, returned
        /// once it is written.
        holds_permit: bool,
    },
    /// Wakes the writer so it reports dropped messages.
    LagNotice,
    /// Write what came before, then close the socket.
    Close,
}

/// Messages dropped for one broadcast subscription since its last LAGGED report.
pub type MissedCounter = Arc<AtomicU64>;

/// The receiving end of an outbox, owned by the writer task.
pub type OutboxReceiver = mpsc::UnboundedReceiver<Outbound>;

/// The sending side of a connection's outbound frames. Shared (`Arc`) by the session,
/// the subscription index and the queues that deliver to this connection.
#[derive(Debug)]
pub struct Outbox {
    connection_id: u64,
    sender: mpsc::UnboundedSender<Outbound>,
    broadcast_pending: AtomicUsize,
    broadcast_capacity: usize,
    /// Publishers waiting for this buffer to drain, and the signal they wait for.
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// Set when the subscriber made no progress for [`STALL_LIMIT`]; cleared when
    /// its buffer has drained.
    stalled: AtomicBool,
    control_room: Semaphore,
    lag_watch: Mutex<Vec<(u32, MissedCounter)>>,
    has_lagged: AtomicBool,
    created: Instant,
    epoch: Instant,
    last_lag_warning_ms: AtomicU64,
    stats: Arc<Stats>,
}

impl Outbox {
    /// A new outbox and the receiver its writer task drains. `epoch` is the
    /// broker's start, the origin of latency [`Stamp`]s.
    pub fn new(
        connection_id: u64,
        broadcast_capacity: usize,
        stats: Arc<Stats>,
        epoch: Instant,
    ) -> (Arc<Outbox>, OutboxReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let outbox = Outbox {
            connection_id,
            sender,
            broadcast_pending: AtomicUsize::new(0),
            broadcast_capacity,
            drain_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            stalled: AtomicBool::new(false),
            control_room: Semaphore::new(CONTROL_FRAME_LIMIT),
            lag_watch: Mutex::new(Vec::new()),
            has_lagged: AtomicBool::new(false),
            created: Instant::now(),
            epoch,
            last_lag_warning_ms: AtomicU64::new(0),
            stats,
        };
        (Arc::new(outbox), receiver)
    }

    fn stamp_now(&self) -> Stamp {
        stamp_from_micros(self.epoch.elapsed().as_micros())
    }

    /// The connection this outbox writes to.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// Queues a broadcast delivery, or drops and counts it when the buffer is full.
    /// Never waits; says when the publisher should let the buffer drain. `stamp`
    /// marks a latency sample (0: not sampled).
    pub fn push_broadcast(
        &self,
        sid: u32,
        missed: &AtomicU64,
        message: Arc<Message>,
        stamp: Stamp,
    ) -> Pushed {
        let pending = self.broadcast_pending.fetch_add(1, Ordering::AcqRel);
        if pending >= self.broadcast_capacity {
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            self.record_drop(sid, missed);
            return Pushed::Dropped;
        }
        if self
            .sender
            .send(Outbound::Broadcast {
                sid,
                stamp,
                message,
            })
            .is_err()
        {
            // The connection is gone; its subscriptions are being removed.
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            return Pushed::Dropped;
        }
        if pending >= self.high_water() && !self.stalled.load(Ordering::Acquire) {
            Pushed::QueuedUnderPressure
        } else {
            Pushed::Queued
        }
    }

    fn high_water(&self) -> usize {
        (self.broadcast_capacity / 2).max(1)
    }

    fn low_water(&self) -> usize {
        self.broadcast_capacity / 4
    }

    /// Waits until the broadcast buffer has drained to a quarter, as long as the
    /// writer keeps making progress; after [`STALL_LIMIT`] without progress the
    /// subscriber is marked stalled and this returns. Cancel-safe.
    pub async fn wait_for_drain(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.drain_waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.drain_waiters);
        let mut last = self.broadcast_pending.load(Ordering::Acquire);
        loop {
            if last <= self.low_water() || self.stalled.load(Ordering::Acquire) {
                return;
            }
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.broadcast_pending.load(Ordering::Acquire);
            if now < last {
                last = now;
                continue;
            }
            if tokio::time::timeout(STALL_LIMIT, notified).await.is_err() {
                self.stalled.store(true, Ordering::Release);
                debug!(
                    connection = self.connection_id,
                    "subscriber made no progress for {STALL_LIMIT:?}: not waiting for it"
                );
                return;
            }
        }
    }

    /// Queues a queue delivery. Fails only when the connection is gone, in which case
    /// the caller keeps the message.
    pub fn push_queued(
        &self,
        sid: u32,
        delivery_id: u64,
        redelivered: bool,
        message: Arc<Message>,
        stamp: Stamp,
    ) -> Result<(), Arc<Message>> {
        self.sender
            .send(Outbound::Queued {
                sid,
                stamp,
                delivery_id,
                redelivered,
                message,
            })
            .map_err(|error| match error.0 {
                Outbound::Queued { message, .. } => message,
                _ => unreachable!("sent a Queued item"),
            })
    }

    /// Queues a control frame for this connection's own client.
    pub fn push_control(&self, frame: Frame) {
        // Taking a permit may fail by a frame or two past the limit (one request can
        // produce an error and a close); the session stops reading before that
        // matters. Only frames that took a permit give one back.
        let holds_permit = match self.control_room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        };
        let _ = self.sender.send(Outbound::Control {
            frame: Box::new(frame),
            holds_permit,
        });
    }

    /// Whether more control frames may be queued without waiting.
    pub fn has_control_room(&self) -> bool {
        self.control_room.available_permits() > 0
    }

    /// Waits until the writer has room for more control frames.
    pub async fn wait_for_control_room(&self) {
        if self.control_room.available_permits() == 0 {
            // Acquire then release at once: we only wait for room to exist.
            let _ = self.control_room.acquire().await;
        }
    }

    /// Asks the writer to write everything queued so far, then close the socket.
    pub fn close(&self) {
        let _ = self.sender.send(Outbound::Close);
    }

    /// Registers a broadcast subscription's missed-message counter, so the writer
    /// can report its gaps.
    pub fn watch_lag(&self, sid: u32, missed: MissedCounter) {
        self.lock_lag_watch().push((sid, missed));
    }

    /// Forgets a subscription's counter (it ended). Its drops were counted in the
    /// broker's statistics when they happened.
    pub fn unwatch_lag(&self, sid: u32) {
        let mut watch = self.lock_lag_watch();
        if let Some(index) = watch.iter().position(|(watched, _)| *watched == sid) {
            watch.swap_remove(index);
        }
    }

    fn lock_lag_watch(&self) -> std::sync::MutexGuard<'_, Vec<(u32, MissedCounter)>> {
        self.lag_watch
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Counts a dropped message. Costs three atomics; the clock is read and the writer
    /// woken only when a new gap starts, so an overloaded broker spends its time on
    /// deliveries, not on bookkeeping for drops.
    fn record_drop(&self, sid: u32, missed: &AtomicU64) {
        missed.fetch_add(1, Ordering::AcqRel);
        // Counted now, not when reported: a writer blocked on a stuck client must not
        // hide its drops from /metrics.
        Stats::add(&self.stats.dropped_slow_consumer, 1);
        if self.has_lagged.swap(true, Ordering::AcqRel) {
            return;
        }
        // Make sure an idle writer wakes up to report the gap.
        let _ = self.sender.send(Outbound::LagNotice);
        let now_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_lag_warning_ms.load(Ordering::Relaxed);
        let interval = LAG_WARNING_INTERVAL.as_millis() as u64;
        if (last == 0 || now_ms.saturating_sub(last) >= interval)
            && self
                .last_lag_warning_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                connection = self.connection_id,
                subscription = sid,
                buffer = self.broadcast_capacity,
                "slow consumer: outbound buffer full, dropping broadcast messages for it"
            );
        }
    }

    /// Takes the counts of messages dropped per subscription since the last report.
    fn take_lag_reports(&self) -> Vec<(u32, u64)> {
        if !self.has_lagged.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let reports: Vec<(u32, u64)> = self
            .lock_lag_watch()
            .iter()
            .filter_map(|(sid, missed)| {
                let count = missed.swap(0, Ordering::AcqRel);
                (count > 0).then_some((*sid, count))
            })
            .collect();
        reports
    }
}

/// How a writer task ended.
#[derive(Debug)]
pub enum WriterExit {
    /// Asked to close, or every sender is gone.
    Closed,
    /// Writing to the socket failed (the client went away).
    Failed(std::io::Error),
    /// A write did not complete within the write deadline (`WRITE_DEADLINE_MS`).
    TimedOut,
}

/// Drains an outbox into the socket until closed. One `write_all` per batch. A
/// write that takes longer than `write_deadline` ends the connection: a client that
/// reads nothing cannot pin its resources forever (nats-server's default is 10 s too).
pub async fn run_writer(
    mut socket: OwnedWriteHalf,
    mut receiver: OutboxReceiver,
    outbox: Arc<Outbox>,
    write_deadline: Duration,
) -> WriterExit {
    let mut batch: Vec<Outbound> = Vec::new();
    let mut samples: Vec<(DeliveryMode, Stamp)> = Vec::new();
    let mut buffer = WriteBuffer::default();
    loop {
        if receiver.recv_many(&mut batch, BATCH_LIMIT).await == 0 {
            return WriterExit::Closed;
        }
        let mut closing = false;
        let mut broadcast_written = 0usize;
        let mut queued_written = 0u64;
        let mut redelivered_written = 0u64;
        let mut control_written = 0usize;
        for item in batch.drain(..) {
            let result = match item {
                Outbound::Broadcast {
                    sid,
                    stamp,
                    message,
                } => {
                    broadcast_written += 1;
                    if stamp != 0 {
                        samples.push((DeliveryMode::Broadcast, stamp));
                    }
                    buffer.delivery(sid, 0, false, &message)
                }
                Outbound::Queued {
                    sid,
                    stamp,
                    delivery_id,
                    redelivered,
                    message,
                } => {
                    queued_written += 1;
                    if stamp != 0 {
                        samples.push((DeliveryMode::Queue, stamp));
                    }
                    redelivered_written += u64::from(redelivered);
                    buffer.delivery(sid, delivery_id, redelivered, &message)
                }
                Outbound::Control {
                    frame,
                    holds_permit,
                } => {
                    control_written += usize::from(holds_permit);
                    frame.encode(&mut buffer.bytes)
                }
                Outbound::LagNotice => Ok(()),
                Outbound::Close => {
                    closing = true;
                    break;
                }
            };
            if let Err(error) = result {
                // Only frames the broker built itself get here, from validated fields.
                warn!(connection = outbox.connection_id, %error, "could not encode an outbound frame; skipped");
            }
            if buffer.len() >= WRITE_CHUNK_BYTES {
                if let Some(exit) = flush(&mut socket, &mut buffer, &outbox, write_deadline).await {
                    return exit;
                }
            }
        }
        // Once per batch, after the deliveries: a drop that happens later sets the
        // flag again and wakes the writer with a LagNotice.
        for (sid, missed) in outbox.take_lag_reports() {
            encode(&mut buffer.bytes, &Frame::Lagged { sid, missed });
        }
        if let Some(exit) = flush(&mut socket, &mut buffer, &outbox, write_deadline).await {
            return exit;
        }
        let pending = outbox
            .broadcast_pending
            .fetch_sub(broadcast_written, Ordering::AcqRel)
            - broadcast_written;
        if pending <= outbox.low_water() && outbox.stalled.load(Ordering::Relaxed) {
            outbox.stalled.store(false, Ordering::Release);
        }
        if broadcast_written > 0 && outbox.drain_waiters.load(Ordering::Acquire) > 0 {
            outbox.drained.notify_waiters();
        }
        outbox.control_room.add_permits(control_written);
        Stats::add(&outbox.stats.delivered_broadcast, broadcast_written as u64);
        Stats::add(&outbox.stats.delivered_queue, queued_written);
        Stats::add(&outbox.stats.redelivered, redelivered_written);
        if !samples.is_empty() {
            // One clock read per batch, after the write: the latency a client sees.
            let now = outbox.stamp_now();
            for (path, stamp) in samples.drain(..) {
                outbox
                    .stats
                    .observe_latency(path, stamp_elapsed_seconds(stamp, now));
            }
        }
        if closing {
            let _ = socket.shutdown().await;
            return WriterExit::Closed;
        }
        if receiver.is_empty() {
            if buffer.bytes.capacity() > IDLE_BUFFER_BYTES {
                buffer.bytes = BytesMut::new();
            }
            if batch.capacity() > 64 {
                batch = Vec::new();
            }
        }
    }
}

/// Payloads at least this large are not copied into the write buffer: the frame's
/// head goes in the buffer and the payload is written from the shared message by a
/// vectored write.
const VECTORED_PAYLOAD_BYTES: usize = 16 * 1024;

/// What the writer sends next: encoded bytes, and for large payloads a list of
/// segments (encoded heads interleaved with shared payloads) written with `writev`.
#[derive(Debug, Default)]
struct WriteBuffer {
    bytes: BytesMut,
    segments: Vec<Bytes>,
    segment_bytes: usize,
}

impl WriteBuffer {
    fn len(&self) -> usize {
        self.bytes.len() + self.segment_bytes
    }

    fn delivery(
        &mut self,
        sid: u32,
        delivery_id: u64,
        redelivered: bool,
        message: &Message,
    ) -> Result<(), tern_proto::ProtocolError> {
        codec::encode_deliver_head(
            &mut self.bytes,
            sid,
            delivery_id,
            redelivered,
            &message.subject,
            message.reply_to.as_deref(),
            &message.headers,
            message.payload.len(),
        )?;
        if message.payload.len() < VECTORED_PAYLOAD_BYTES {
            self.bytes.extend_from_slice(&message.payload);
            return Ok(());
        }
        let head = self.bytes.split().freeze();
        self.segment_bytes += head.len() + message.payload.len();
        self.segments.push(head);
        self.segments.push(message.payload.clone());
        Ok(())
    }

    /// Writes everything: one `write_all` when there are no segments, otherwise
    /// vectored writes of up to 64 segments each.
    async fn write_to(&mut self, socket: &mut OwnedWriteHalf) -> std::io::Result<()> {
        if self.segments.is_empty() {
            socket.write_all(&self.bytes).await?;
            self.bytes.clear();
            return Ok(());
        }
        if !self.bytes.is_empty() {
            let tail = self.bytes.split().freeze();
            self.segments.push(tail);
        }
        let mut first = 0;
        while first < self.segments.len() {
            let slices: Vec<IoSlice<'_>> = self.segments[first..]
                .iter()
                .take(64)
                .map(|segment| IoSlice::new(segment))
                .collect();
            let mut written = socket.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let segment = &mut self.segments[first];
                if written >= segment.len() {
                    written -= segment.len();
                    first += 1;
                } else {
                    segment.advance(written);
                    written = 0;
                }
            }
        }
        self.segments.clear();
        self.segment_bytes = 0;
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.segments.clear();
        self.segment_bytes = 0;
    }
}

fn encode(buffer: &mut BytesMut, frame: &Frame) {
    if let Err(error) = frame.encode(buffer) {
        warn!(%error, "could not encode an outbound frame; skipped");
    }
}

/// Writes the buffer; `Some` says why the writer must stop.
async fn flush(
    socket: &mut OwnedWriteHalf,
    buffer: &mut WriteBuffer,
    outbox: &Outbox,
    write_deadline: Duration,
) -> Option<WriterExit> {
    let length = buffer.len();
    if length == 0 {
        return None;
    }
    let exit = match tokio::time::timeout(write_deadline, buffer.write_to(socket)).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            debug!(connection = outbox.connection_id, %error, "write failed");
            Some(WriterExit::Failed(error))
        }
        Err(_) => {
            warn!(
                connection = outbox.connection_id,
                deadline_ms = write_deadline.as_millis() as u64,
                "slow consumer: write deadline exceeded, closing"
            );
            Some(WriterExit::TimedOut)
        }
    };
    Stats::add(&outbox.stats.bytes_out, length as u64);
    buffer.clear();
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_items_stay_small_because_each_is_moved_several_times_per_delivery() {
        assert!(
            std::mem::size_of::<Outbound>() <= 40,
            "{} bytes",
            std::mem::size_of::<Outbound>()
        );
    }

    #[test]
    fn a_full_buffer_drops_counts_and_reports_per_subscription() {
        let stats = Arc::new(Stats::default());
        let (outbox, mut receiver) = Outbox::new(1, 2, stats.clone(), Instant::now());
        let (first, second) = (MissedCounter::default(), MissedCounter::default());
        outbox.watch_lag(1, first.clone());
        outbox.watch_lag(2, second.clone());
        let message = Arc::new(Message {
            subject: "s".into(),
            reply_to: None,
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
        });
        assert_eq!(
            outbox.push_broadcast(1, &first, message.clone(), 0),
            Pushed::Queued
        );
        assert_eq!(
            outbox.push_broadcast(2, &second, message.clone(), 0),
            Pushed::QueuedUnderPressure,
            "half full"
        );
        for _ in 0..3 {
            assert_eq!(
                outbox.push_broadcast(1, &first, message.clone(), 0),
                Pushed::Dropped
            );
        }
        assert_eq!(
            outbox.push_broadcast(2, &second, message.clone(), 0),
            Pushed::Dropped
        );
        let mut reports = outbox.take_lag_reports();
        reports.sort_unstable();
        assert_eq!(reports, vec![(1, 3), (2, 1)]);
        assert_eq!(stats.snapshot().dropped_slow_consumer, 4);
        assert!(outbox.take_lag_reports().is_empty(), "reported once");
        // Two deliveries and one wake-up notice were queued.
        let mut queued = 0;
        while receiver.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 3);
    }
}
