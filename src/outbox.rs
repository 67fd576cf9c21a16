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
//! Frames are encoded when they are pushed, straight into the connection's pending
//! buffer (under a short lock); the writer swaps that buffer for its empty spare and
//! writes it with one `write` per batch: under load, one syscall carries a whole batch
//! of frames, and a delivery costs no allocation and no channel hop. Payloads of
//! [`VECTORED_PAYLOAD_BYTES`] or more are not copied: the shared payload is written by
//! a vectored write.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tern_proto::{codec, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use crate::stats::{stamp_elapsed_seconds, stamp_from_micros, Stamp, Stats};
use tern_proto::DeliveryMode;
use tern_proto::Message;

/// Control frames that may wait for the writer before the session stops reading
/// the client's requests.
pub const CONTROL_FRAME_LIMIT: usize = 1024;

/// Latency samples kept per batch; more are not recorded (they are samples).
const SAMPLE_LIMIT: usize = 64;

/// A writer idle for [`IDLE_RELEASE_AFTER`] keeps at most this much buffer
/// capacity; above it the buffers are released, so idle connections cost little
/// memory.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;

/// How long a writer must be idle before it releases its buffers. Not at once: a
/// writer that catches up with its publishers is idle many times a second, and
/// releasing and regrowing its buffers each time costs page faults.
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Bytes waiting for one connection (pending and being written) past which its
/// publishers pause, whatever the message count: large messages reach it long before
/// half of `CONSUMER_CHANNEL_BUFFER_SIZE`. They resume below a quarter of it.
pub const PRESSURE_BYTES: usize = 4 * 1024 * 1024;

/// How long a publisher waits for a subscriber's writer to make any progress before
/// treating that subscriber as stalled. Not shorter: the kernel wakes a blocked
/// writer only once a third of its send buffer (megabytes, autotuned) has drained,
/// which for a subscriber reading 10 MB/s takes over 100 ms.
pub const STALL_LIMIT: Duration = Duration::from_millis(500);

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

/// Minimum time between two slow-consumer warnings for one connection.
const LAG_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Messages dropped for one broadcast subscription since its last LAGGED report.
pub type MissedCounter = Arc<AtomicU64>;

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
    pending: Mutex<Pending>,
    wake_writer: Notify,
    broadcast_pending: AtomicUsize,
    /// Bytes of the batch the writer is writing and has not written yet (0 between
    /// batches).
    in_flight_bytes: AtomicUsize,
    broadcast_capacity: usize,
    /// Publishers waiting for this buffer to drain, and the signal they wait for.
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// Write calls that wrote something: progress, even in the middle of a large
    /// batch (whose deliveries count as written only once all of it is).
    writes: AtomicU64,
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
    /// A new outbox; [`run_writer`] drains it. `epoch` is the broker's start, the
    /// origin of latency [`Stamp`]s.
    pub fn new(
        connection_id: u64,
        broadcast_capacity: usize,
        stats: Arc<Stats>,
        epoch: Instant,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            connection_id,
            pending: Mutex::new(Pending::default()),
            wake_writer: Notify::new(),
            broadcast_pending: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            broadcast_capacity,
            drain_waiters: AtomicUsize::new(0),
            writes: AtomicU64::new(0),
            drained: Notify::new(),
            stalled: AtomicBool::new(false),
            control_room: Semaphore::new(CONTROL_FRAME_LIMIT),
            lag_watch: Mutex::new(Vec::new()),
            has_lagged: AtomicBool::new(false),
            created: Instant::now(),
            epoch,
            last_lag_warning_ms: AtomicU64::new(0),
            stats,
        })
    }

    fn stamp_now(&self) -> Stamp {
        stamp_from_micros(self.epoch.elapsed().as_micros())
    }

    /// The connection this outbox writes to.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
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
        let waiting = self.broadcast_pending.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.broadcast_capacity {
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            self.record_drop(sid, missed);
            return Pushed::Dropped;
        }
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            // The connection is gone; its subscriptions are being removed.
            drop(pending);
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            return Pushed::Dropped;
        }
        if let Err(error) = pending.frames.delivery(sid, 0, false, message) {
            drop(pending);
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            warn!(connection = self.connection_id, %error, "could not encode a delivery; skipped");
            return Pushed::Dropped;
        }
        pending.broadcast += 1;
        pending.sample(DeliveryMode::Broadcast, stamp);
        let wake_writer = std::mem::take(&mut pending.writer_idle);
        let bytes = pending.frames.len() + self.in_flight_bytes.load(Ordering::Acquire);
        drop(pending);
        Pushed::Queued {
            under_pressure: (waiting >= self.high_water() || bytes >= PRESSURE_BYTES)
                && !self.stalled.load(Ordering::Acquire),
            wake_writer,
        }
    }

    /// Bytes waiting for this connection: encoded and not yet taken, plus the batch
    /// being written.
    fn waiting_bytes(&self) -> usize {
        self.lock_pending().frames.len() + self.in_flight_bytes.load(Ordering::Acquire)
    }

    fn high_water(&self) -> usize {
        (self.broadcast_capacity / 2).max(1)
    }

    fn low_water(&self) -> usize {
        self.broadcast_capacity / 4
    }

    /// Waits until the broadcast buffer has drained to a quarter (of its message
    /// capacity and of [`PRESSURE_BYTES`]), as long as the writer keeps making
    /// progress (writing anything counts); after
    /// [`STALL_LIMIT`] without progress the subscriber is marked stalled and this
    /// returns. Cancel-safe.
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
        let mut last_writes = self.writes.load(Ordering::Acquire);
        loop {
            if (last <= self.low_water() && self.waiting_bytes() <= PRESSURE_BYTES / 4)
                || self.stalled.load(Ordering::Acquire)
            {
                return;
            }
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.broadcast_pending.load(Ordering::Acquire);
            let writes = self.writes.load(Ordering::Acquire);
            if now < last || writes != last_writes {
                last = now;
                last_writes = writes;
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
            pending.queued += 1;
            pending.redelivered += u64::from(redelivered);
            pending.sample(DeliveryMode::Queue, stamp);
        }
        self.release(pending);
        Ok(())
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
        let mut pending = self.lock_pending();
        if pending.writer_gone {
            return;
        }
        encode(&mut pending.frames.bytes, &frame);
        pending.control_permits += usize::from(holds_permit);
        self.release(pending);
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

    fn lock_lag_watch(&self) -> MutexGuard<'_, Vec<(u32, MissedCounter)>> {
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
        self.wake();
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

    /// Moves everything pending into `batch` (whose buffers are empty), or returns
    /// `false` having marked the writer idle when there is nothing to write.
    fn take_pending(&self, batch: &mut Pending) -> bool {
        let mut pending = self.lock_pending();
        let lagged = self.has_lagged.load(Ordering::Acquire);
        if pending.frames.is_empty() && !pending.close_requested && !lagged {
            pending.writer_idle = true;
            return false;
        }
        std::mem::swap(&mut pending.frames, &mut batch.frames);
        self.in_flight_bytes
            .store(batch.frames.len(), Ordering::Release);
        std::mem::swap(&mut pending.samples, &mut batch.samples);
        batch.broadcast = std::mem::take(&mut pending.broadcast);
        batch.queued = std::mem::take(&mut pending.queued);
        batch.redelivered = std::mem::take(&mut pending.redelivered);
        batch.control_permits = std::mem::take(&mut pending.control_permits);
        batch.close_requested = pending.close_requested;
        true
    }

    /// Called after each write call that wrote something: wakes publishers waiting
    /// for this subscriber, so a large batch that takes long to write is not taken
    /// for a stall.
    fn note_write(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        // What is written no longer waits: publishers paused on bytes resume while
        // the rest of the batch is still being written, so the pipe stays full.
        let _ = self
            .in_flight_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                Some(waiting.saturating_sub(bytes))
            });
        if self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Called when a batch has been written: frees its room and counts it.
    fn written(&self, batch: &mut Pending) {
        self.in_flight_bytes.store(0, Ordering::Release);
        let written = std::mem::take(&mut batch.broadcast);
        let waiting = self.broadcast_pending.fetch_sub(written, Ordering::AcqRel) - written;
        if waiting <= self.low_water() && self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Release);
        }
        if written > 0 && self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
        self.control_room
            .add_permits(std::mem::take(&mut batch.control_permits));
        Stats::add(&self.stats.delivered_broadcast, written as u64);
        Stats::add(
            &self.stats.delivered_queue,
            std::mem::take(&mut batch.queued),
        );
        Stats::add(
            &self.stats.redelivered,
            std::mem::take(&mut batch.redelivered),
        );
        if !batch.samples.is_empty() {
            // One clock read per batch, after the write: the latency a client sees.
            let now = self.stamp_now();
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
    fn writer_ended(&self) {
        let mut pending = self.lock_pending();
        pending.writer_gone = true;
        pending.frames = WriteBuffer::default();
        pending.samples = Vec::new();
    }
}

/// How a writer task ended.
#[derive(Debug)]
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
pub async fn run_writer(
    mut socket: OwnedWriteHalf,
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
        for (sid, missed) in outbox.take_lag_reports() {
            encode(&mut batch.frames.bytes, &Frame::Lagged { sid, missed });
        }
        let length = batch.frames.len();
        let result = batch
            .frames
            .write_to(&mut socket, &outbox, write_deadline)
            .await;
        batch.frames.clear();
        Stats::add(&outbox.stats.bytes_out, length as u64);
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

/// Payloads at least this large are not copied into the write buffer: the frame's
/// head goes in the buffer and the payload is written from the shared message by a
/// vectored write.
pub const VECTORED_PAYLOAD_BYTES: usize = 16 * 1024;

/// Why a write ended the connection.
enum WriteFailure {
    Io(std::io::Error),
    Deadline,
}

/// Encoded frames: bytes, and for large payloads a list of segments (encoded heads
/// interleaved with shared payloads, written before `bytes`) sent with `writev`.
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

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn delivery(
        &mut self,
        sid: u32,
        delivery_id: u64,
        redelivered: bool,
        message: &Message,
    ) -> Result<(), tern_proto::ProtocolError> {
        let payload = message.payload();
        if payload.len() < VECTORED_PAYLOAD_BYTES {
            return codec::encode_deliver(&mut self.bytes, sid, delivery_id, redelivered, message);
        }
        codec::encode_deliver_head(&mut self.bytes, sid, delivery_id, redelivered, message)?;
        let head = self.bytes.split().freeze();
        self.segment_bytes += head.len() + payload.len();
        self.segments.push(head);
        self.segments.push(message.payload_bytes());
        Ok(())
    }

    /// Writes everything: plain writes when there are no segments, otherwise
    /// vectored writes of up to 64 segments each. Each write may block for at most
    /// `deadline`.
    async fn write_to(
        &mut self,
        socket: &mut OwnedWriteHalf,
        outbox: &Outbox,
        deadline: Duration,
    ) -> Result<(), WriteFailure> {
        if self.segments.is_empty() {
            let mut position = 0;
            while position < self.bytes.len() {
                let written = progress(deadline, socket.write(&self.bytes[position..])).await?;
                position += written;
                outbox.note_write(written);
            }
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
            let mut written = progress(deadline, socket.write_vectored(&slices)).await?;
            outbox.note_write(written);
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
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.segments.clear();
        self.segment_bytes = 0;
    }
}

/// Runs one write with a deadline; zero bytes written is an error.
async fn progress(
    deadline: Duration,
    write: impl std::future::Future<Output = std::io::Result<usize>>,
) -> Result<usize, WriteFailure> {
    match tokio::time::timeout(deadline, write).await {
        Err(_) => Err(WriteFailure::Deadline),
        Ok(Err(error)) => Err(WriteFailure::Io(error)),
        Ok(Ok(0)) => Err(WriteFailure::Io(std::io::ErrorKind::WriteZero.into())),
        Ok(Ok(written)) => Ok(written),
    }
}

fn encode(buffer: &mut BytesMut, frame: &Frame) {
    if let Err(error) = frame.encode(buffer) {
        warn!(%error, "could not encode an outbound frame; skipped");
    }
}

/// Test support: decodes and removes everything pending, as the client would read it.
#[cfg(test)]
pub(crate) fn take_frames(outbox: &Outbox) -> Vec<Frame> {
    let mut pending = outbox.lock_pending();
    let mut buffer = WriteBuffer::default();
    std::mem::swap(&mut pending.frames, &mut buffer);
    let mut bytes = BytesMut::new();
    for segment in &buffer.segments {
        bytes.extend_from_slice(segment);
    }
    bytes.extend_from_slice(&buffer.bytes);
    let mut frames = Vec::new();
    while let Some(frame) =
        codec::decode(&mut bytes, u32::MAX).expect("the outbox encodes valid frames")
    {
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: Bytes) -> Message {
        Message::new("s", payload).expect("a valid message")
    }

    #[test]
    fn a_full_buffer_drops_counts_and_reports_per_subscription() {
        let stats = Arc::new(Stats::default());
        let outbox = Outbox::new(1, 2, stats.clone(), Instant::now());
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
        let mut reports = outbox.take_lag_reports();
        reports.sort_unstable();
        assert_eq!(reports, vec![(1, 3), (2, 1)]);
        assert_eq!(stats.snapshot().dropped_slow_consumer, 4);
        assert!(outbox.take_lag_reports().is_empty(), "reported once");
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
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), Instant::now());
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
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), Instant::now());
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
        let outbox = Outbox::new(1, 100, Arc::new(Stats::default()), Instant::now());
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
        assert_eq!(outbox.broadcast_pending.load(Ordering::Acquire), 0);
    }
}
