//! A connection's outbound side: the bounded [`Outbox`] every producer of frames for
//! this client pushes into, and the task that writes it.
//!
//! - this module — the outbox: broadcast and queue deliveries and control frames,
//!   encoded when pushed, straight into one pending buffer under a short lock;
//! - `writer.rs` — the batching writer (one write per batch) and what it counts;
//! - `write_buffer.rs` — encoded bytes plus shared large payloads for `writev`;
//! - `flow_control.rs` — publisher flow control and answer backpressure;
//! - `lag.rs` — drops for stalled subscribers: counted, reported with LAGGED, logged.
//!
//! How the three kinds of frames are bounded, and the lock order (a queue's lock is
//! held while it pushes here), is in `docs/ARCHITECTURE.md`.

mod flow_control;
mod lag;
mod write_buffer;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tern_proto::{DeliveryMode, Frame, Message};
use tokio::sync::Notify;
use tracing::warn;

use crate::clock::{Instant, Stamp};
use crate::connection::Connection;
use crate::stats::Stats;
use flow_control::{ControlRoom, FlowControl};
use lag::LagTracker;
use write_buffer::WriteBuffer;

pub use flow_control::{OutboxLimits, CONTROL_FRAME_LIMIT, PRESSURE_BYTES, STALL_LIMIT};
pub use lag::MissedCounter;
pub use write_buffer::VECTORED_PAYLOAD_BYTES;
pub use writer::{run_writer, WriterExit};

/// Latency samples kept per batch; more are not recorded (they are samples).
const SAMPLE_LIMIT: usize = 64;

/// A writer idle for [`IDLE_RELEASE_AFTER`] keeps at most this much buffer
/// capacity; above it the buffers are released, so idle connections cost little
/// memory.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;

pub use crate::transport::IDLE_RELEASE_AFTER;

/// What became of a broadcast delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued {
        /// The buffer is over half full: the publisher should let it drain.
        under_pressure: bool,
        /// The writer was idle and has not been woken: the publisher must call
        /// [`Outbox::wake_writer`] once it has pushed this batch.
        wake_writer: bool,
    },
    /// Dropped: the buffer was full (counted, reported with LAGGED).
    Dropped,
}

/// The connection's writer has ended: nothing more will be written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGone;

/// Frames encoded for the client and not yet taken by the writer, with what they
/// count for. Guarded by the outbox's lock, which is held only to encode one frame or
/// to swap the whole thing out.
#[derive(Debug, Default)]
struct Pending {
    frames: WriteBuffer,
    /// Broadcast deliveries in `frames`.
    broadcast: usize,
    /// Queue deliveries in `frames`, and how many of those are redeliveries.
    queued: u64,
    redelivered: u64,
    /// Control frames in `frames` that hold a [`CONTROL_FRAME_LIMIT`] permit.
    control_permits: usize,
    /// Latency samples of deliveries in `frames` (at most [`SAMPLE_LIMIT`]).
    samples: Vec<(DeliveryMode, Stamp)>,
    /// Write what is pending, then close the socket.
    close_requested: bool,
    /// The writer has ended: pushes are refused.
    writer_gone: bool,
    /// The writer found nothing to do and waits to be woken.
    writer_idle: bool,
}

impl Pending {
    fn sample(&mut self, mode: DeliveryMode, stamp: Stamp) {
        if stamp != 0 && self.samples.len() < SAMPLE_LIMIT {
            self.samples.push((mode, stamp));
        }
    }
}

/// The sending side of a connection's outbound frames. Shared (`Arc`) by the session,
/// the subscription index and the queues that deliver to this connection.
#[derive(Debug)]
pub struct Outbox {
    connection_id: u64,
    /// Who the client is and what it sent (listed by the connection registry).
    connection: Connection,
    pending: Mutex<Pending>,
    wake_writer: Notify,
    flow: FlowControl,
    control_room: ControlRoom,
    lag: LagTracker,
    /// The broker's start: the origin of latency [`Stamp`]s.
    epoch: Instant,
    stats: Arc<Stats>,
    /// Frame bytes and deliveries written to this connection (for the registry).
    sent_bytes: AtomicU64,
    sent_messages: AtomicU64,
}

impl Outbox {
    /// A new outbox for connection `connection_id` (peer unknown), buffering at
    /// most `broadcast_capacity` broadcast deliveries (and no byte bound: for tests
    /// and embedding); [`run_writer`] drains it. `epoch` is the broker's start, the
    /// origin of latency [`Stamp`]s.
    pub fn new(
        connection_id: u64,
        broadcast_capacity: usize,
        stats: Arc<Stats>,
        epoch: Instant,
    ) -> Arc<Outbox> {
        let peer = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        Outbox::for_connection(
            Connection::new(connection_id, peer),
            OutboxLimits {
                broadcast_messages: broadcast_capacity,
                broadcast_bytes: usize::MAX,
                stall_limit: STALL_LIMIT,
            },
            stats,
            epoch,
        )
    }

    /// [`Outbox::new`] for an accepted connection, described by `connection`, with
    /// the broker's [`OutboxLimits`].
    pub fn for_connection(
        connection: Connection,
        limits: OutboxLimits,
        stats: Arc<Stats>,
        epoch: Instant,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            connection_id: connection.id(),
            connection,
            pending: Mutex::new(Pending::default()),
            wake_writer: Notify::new(),
            flow: FlowControl::new(limits),
            control_room: ControlRoom::new(),
            lag: LagTracker::new(),
            epoch,
            stats,
            sent_bytes: AtomicU64::new(0),
            sent_messages: AtomicU64::new(0),
        })
    }

    /// The connection this outbox writes to.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// What is known about that connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Ends a push: releases the lock, then wakes the writer if it was idle.
    fn release(&self, mut pending: MutexGuard<'_, Pending>) {
        let wake = std::mem::take(&mut pending.writer_idle);
        drop(pending);
        if wake {
            self.wake_writer();
        }
    }

    /// Wakes the writer (after [`Pushed::Queued`] said it was idle).
    pub fn wake_writer(&self) {
        self.wake_writer.notify_one();
    }

    /// Queues a broadcast delivery, or drops and counts it when the buffer is full.
    /// Never waits; says when the publisher should let the buffer drain. Does not
    /// wake an idle writer: it says so, and the publisher wakes it once it has
    /// pushed its whole read batch (one wake-up and one write per batch, not a
    /// writer racing the publisher for each message). `stamp` marks a latency
    /// sample (0: not sampled).
    pub fn push_broadcast(
        &self,
        sid: u32,
        missed: &AtomicU64,
        message: &Message,
        stamp: Stamp,
    ) -> Pushed {
        let Some(waiting) = self.flow.reserve() else {
            self.record_drop(sid, missed);
            return Pushed::Dropped;
        };
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            // The connection is gone; its subscriptions are being removed.
            drop(pending);
            self.flow.unreserve();
            return Pushed::Dropped;
        }
        let in_flight = self.flow.in_flight();
        let frame_bytes = tern_proto::codec::DELIVER_FIXED_BYTES + message.encoded().len();
        if !self
            .flow
            .fits_bytes(pending.frames.len() + in_flight, frame_bytes)
        {
            // Over the byte bound: dropped and reported as for a full buffer.
            drop(pending);
            self.flow.unreserve();
            self.record_drop(sid, missed);
            return Pushed::Dropped;
        }
        if let Err(error) = pending.frames.delivery(sid, 0, false, message) {
            drop(pending);
            self.flow.unreserve();
            warn!(connection = self.connection_id, %error, "could not encode a delivery; skipped");
            return Pushed::Dropped;
        }
        if let Some(reply_to) = message.reply_to() {
            self.connection().delivering_request(reply_to);
        }
        pending.broadcast += 1;
        pending.sample(DeliveryMode::Broadcast, stamp);
        let wake_writer = std::mem::take(&mut pending.writer_idle);
        let bytes = pending.frames.len() + in_flight;
        drop(pending);
        Pushed::Queued {
            under_pressure: self.flow.under_pressure(waiting, bytes),
            wake_writer,
        }
    }

    /// Bytes waiting for this connection: encoded and not yet taken, plus the batch
    /// being written.
    pub fn pending_bytes(&self) -> usize {
        self.lock_pending().frames.len() + self.flow.in_flight()
    }

    /// Frame bytes and deliveries written to this connection so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent_bytes.load(Ordering::Relaxed),
            self.sent_messages.load(Ordering::Relaxed),
        )
    }

    /// Waits until the broadcast buffer has drained to a quarter, or the subscriber
    /// is found stalled (see `flow_control.rs`). Cancel-safe.
    pub async fn wait_for_drain(&self) {
        self.flow
            .wait_for_drain(self.connection_id, || self.pending_bytes())
            .await;
    }

    /// Queues a queue delivery. Fails only when the connection is gone, in which case
    /// the caller keeps the message.
    pub fn push_queued(
        &self,
        sid: u32,
        delivery_id: u64,
        redelivered: bool,
        message: &Message,
        stamp: Stamp,
    ) -> Result<(), WriterGone> {
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            return Err(WriterGone);
        }
        if let Err(error) = pending
            .frames
            .delivery(sid, delivery_id, redelivered, message)
        {
            // Only messages the broker accepted get here, from validated fields; the
            // delivery stays unacked and is redelivered when the consumer leaves.
            warn!(connection = self.connection_id, %error, "could not encode a delivery; skipped");
        } else {
            if let Some(reply_to) = message.reply_to() {
                self.connection().delivering_request(reply_to);
            }
            pending.queued += 1;
            pending.redelivered += u64::from(redelivered);
            pending.sample(DeliveryMode::Queue, stamp);
        }
        self.release(pending);
        Ok(())
    }

    /// Queues a control frame for this connection's own client.
    pub fn push_control(&self, frame: Frame) {
        let holds_permit = self.control_room.try_take();
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            return;
        }
        pending.frames.frame(&frame);
        pending.control_permits += usize::from(holds_permit);
        self.release(pending);
    }

    /// Reserves room for a control frame to be pushed later (a PUBLISH_OK that
    /// waits for the disk), so the client's unread answers stay bounded. Returns
    /// whether a permit was taken (pass it to [`Outbox::push_reserved_control`]).
    pub fn reserve_control(&self) -> bool {
        self.control_room.try_take()
    }

    /// Pushes a control frame whose room [`Outbox::reserve_control`] reserved
    /// (`reserved`: whether it did take a permit). Any thread may call it.
    pub fn push_reserved_control(&self, frame: Frame, reserved: bool) {
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            drop(pending);
            if reserved {
                self.control_room.give_back(1);
            }
            return;
        }
        pending.frames.frame(&frame);
        pending.control_permits += usize::from(reserved);
        self.release(pending);
    }

    /// Whether more control frames may be queued without waiting.
    pub fn has_control_room(&self) -> bool {
        self.control_room.has_room()
    }

    /// Waits until the writer has room for more control frames.
    pub async fn wait_for_control_room(&self) {
        self.control_room.wait_for_room().await;
    }

    /// Asks the writer to write everything queued so far, then close the socket.
    pub fn close(&self) {
        let mut pending = self.lock_pending();
        pending.close_requested = true;
        self.release(pending);
    }

    /// Wakes the writer (if idle) without queueing anything: it then reports gaps.
    fn wake(&self) {
        let pending = self.lock_pending();
        self.release(pending);
    }

    /// Registers a broadcast subscription's missed-message counter, so the writer
    /// can report its gaps.
    pub fn watch_lag(&self, sid: u32, missed: MissedCounter) {
        self.lag.watch(sid, missed);
    }

    /// Forgets a subscription's counter (it ended). Its drops were counted in the
    /// broker's statistics when they happened.
    pub fn unwatch_lag(&self, sid: u32) {
        self.lag.unwatch(sid);
    }

    /// Counts a dropped message; wakes an idle writer when a new gap starts, so it
    /// reports the gap.
    fn record_drop(&self, sid: u32, missed: &AtomicU64) {
        // Counted now, not when reported: a writer blocked on a stuck client must not
        // hide its drops from /metrics.
        Stats::add(&self.stats.dropped_slow_consumer, 1);
        if self
            .lag
            .record_drop(self.connection_id, self.flow.capacity(), sid, missed)
        {
            self.wake();
        }
    }
}

/// Test support: decodes and removes everything pending, as the client would read it.
#[cfg(test)]
pub(crate) fn take_frames(outbox: &Outbox) -> Vec<Frame> {
    let mut pending = outbox.lock_pending();
    let buffer = std::mem::take(&mut pending.frames);
    let mut bytes = buffer.contiguous();
    let mut frames = Vec::new();
    while let Some(frame) =
        tern_proto::codec::decode(&mut bytes, u32::MAX).expect("the outbox encodes valid frames")
    {
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use bytes::Bytes;

    fn message(payload: Bytes) -> Message {
        Message::new("s", payload).expect("a valid message")
    }

    #[test]
    fn a_full_buffer_drops_counts_and_reports_per_subscription() {
        let stats = Arc::new(Stats::default());
        let outbox = Outbox::new(1, 2, stats.clone(), clock::now());
        let (first, second) = (MissedCounter::default(), MissedCounter::default());
        outbox.watch_lag(1, first.clone());
        outbox.watch_lag(2, second.clone());
        let message = message(Bytes::new());
        assert_eq!(
            outbox.push_broadcast(1, &first, &message, 0),
            Pushed::Queued {
                under_pressure: false,
                wake_writer: false
            }
        );
        assert_eq!(
            outbox.push_broadcast(2, &second, &message, 0),
            Pushed::Queued {
                under_pressure: true,
                wake_writer: false
            },
            "half full"
        );
        for _ in 0..3 {
            assert_eq!(
                outbox.push_broadcast(1, &first, &message, 0),
                Pushed::Dropped
            );
        }
        assert_eq!(
            outbox.push_broadcast(2, &second, &message, 0),
            Pushed::Dropped
        );
        let mut reports = outbox.lag.take_reports();
        reports.sort_unstable();
        assert_eq!(reports, vec![(1, 3), (2, 1)]);
        assert_eq!(stats.snapshot().dropped_slow_consumer, 4);
        assert!(outbox.lag.take_reports().is_empty(), "reported once");
        let sids: Vec<u32> = take_frames(&outbox)
            .into_iter()
            .map(|frame| match frame {
                Frame::Deliver(deliver) => deliver.sid,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sids, vec![1, 2], "the two deliveries that fitted, in order");
    }

    #[test]
    fn large_payloads_are_shared_not_copied_and_keep_their_place_in_order() {
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), clock::now());
        let missed = MissedCounter::default();
        let large = message(Bytes::from(vec![7u8; VECTORED_PAYLOAD_BYTES]));
        outbox.push_broadcast(1, &missed, &message(Bytes::from_static(b"a")), 0);
        outbox.push_broadcast(1, &missed, &large, 0);
        outbox.push_control(Frame::Pong);
        {
            let pending = outbox.lock_pending();
            assert_eq!(pending.frames.segments.len(), 2, "head, then the payload");
            assert_eq!(
                pending.frames.segments[1].as_ptr(),
                large.payload().as_ptr(),
                "the payload is the publisher's buffer"
            );
        }
        let frames = take_frames(&outbox);
        assert_eq!(frames.len(), 3);
        assert!(matches!(&frames[0], Frame::Deliver(d) if d.message.payload() == b"a"));
        assert!(matches!(&frames[1], Frame::Deliver(d) if d.message == large));
        assert_eq!(frames[2], Frame::Pong);
    }

    #[test]
    fn an_idle_writer_is_reported_once_for_the_publisher_to_wake() {
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), clock::now());
        let mut batch = Pending::default();
        assert!(!outbox.take_pending(&mut batch), "nothing to write: idle");
        let missed = MissedCounter::default();
        let message = message(Bytes::from_static(b"x"));
        let wakes: Vec<bool> = (0..3)
            .map(|_| match outbox.push_broadcast(1, &missed, &message, 0) {
                Pushed::Queued { wake_writer, .. } => wake_writer,
                Pushed::Dropped => panic!("room"),
            })
            .collect();
        assert_eq!(wakes, vec![true, false, false]);
        assert!(outbox.take_pending(&mut batch));
        assert_eq!(batch.broadcast, 3, "one batch for the writer");
    }

    #[test]
    fn a_gone_writer_refuses_queue_deliveries_and_drops_broadcasts() {
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), clock::now());
        outbox.writer_ended();
        let message = message(Bytes::from_static(b"x"));
        assert_eq!(
            outbox.push_queued(1, 1, false, &message, 0),
            Err(WriterGone)
        );
        assert_eq!(
            outbox.push_broadcast(1, &MissedCounter::default(), &message, 0),
            Pushed::Dropped
        );
        assert!(take_frames(&outbox).is_empty());
        assert_eq!(outbox.flow.broadcast_pending(), 0);
    }

    #[test]
    fn a_stalled_connection_is_bounded_in_bytes_as_well_as_in_messages() {
        let stats = Arc::new(Stats::default());
        let bound = 2 << 20;
        let outbox = Outbox::for_connection(
            Connection::new(1, std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
            OutboxLimits {
                broadcast_messages: 1000,
                broadcast_bytes: bound,
                stall_limit: STALL_LIMIT,
            },
            stats.clone(),
            clock::now(),
        );
        let missed = MissedCounter::default();
        outbox.watch_lag(1, missed.clone());
        let large = message(Bytes::from(vec![1u8; 512 * 1024]));
        let pushed: Vec<bool> = (0..10)
            .map(|_| outbox.push_broadcast(1, &missed, &large, 0) != Pushed::Dropped)
            .collect();
        assert_eq!(
            pushed.iter().filter(|queued| **queued).count(),
            3,
            "{pushed:?}"
        );
        assert!(outbox.pending_bytes() <= bound);
        assert_eq!(outbox.lag.take_reports(), vec![(1, 7)]);
        assert_eq!(stats.snapshot().dropped_slow_consumer, 7);
        // An empty buffer takes any frame, even one above the bound.
        let huge = Outbox::for_connection(
            Connection::new(2, std::net::SocketAddr::from(([127, 0, 0, 1], 2))),
            OutboxLimits {
                broadcast_messages: 1000,
                broadcast_bytes: 1024,
                stall_limit: STALL_LIMIT,
            },
            stats,
            clock::now(),
        );
        assert_ne!(huge.push_broadcast(1, &missed, &large, 0), Pushed::Dropped);
        assert_eq!(huge.push_broadcast(1, &missed, &large, 0), Pushed::Dropped);
    }
}
