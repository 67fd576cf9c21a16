//! Flow control on a connection's outbound side.
//!
//! Two mechanisms, one per kind of traffic:
//! - **publisher flow control** ([`FlowControl`]): broadcast deliveries are counted
//!   against `CONSUMER_CHANNEL_BUFFER_SIZE` messages and [`PRESSURE_BYTES`]. Past
//!   half (or past the byte bound) the publishers feeding this connection pause
//!   reading their sockets until it drains to a quarter, as long as the writer
//!   keeps making progress; a subscriber that makes none for `SLOW_CONSUMER_STALL_MS` is
//!   marked stalled and no longer waited for (its extra messages are then dropped
//!   and reported, see `lag.rs`);
//! - **answer backpressure** ([`ControlRoom`]): the frames answering a client's own
//!   requests (PUBLISH_OK, ERROR, PONG) take one of [`CONTROL_FRAME_LIMIT`] permits;
//!   when none is left the session stops reading that client's requests.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tracing::debug;

/// Control frames that may wait for the writer before the session stops reading
/// the client's requests. Large enough that a client pipelining confirmed publishes
/// never waits on it while it reads; small enough to bound a client that never reads.
pub const CONTROL_FRAME_LIMIT: usize = 1024;

/// Bytes waiting for one connection (pending and being written) past which its
/// publishers pause, whatever the message count: large messages reach it long before
/// half of `CONSUMER_CHANNEL_BUFFER_SIZE`. They resume below a quarter of it.
pub const PRESSURE_BYTES: usize = 4 * 1024 * 1024;

/// The default of `SLOW_CONSUMER_STALL_MS`: how long a publisher waits for a
/// subscriber's connection to accept any bytes before treating that subscriber as
/// stalled. TCP moves data to a slow reader in bursts (a window update per 64 KiB or
/// more read on loopback), so this must exceed the gap between bursts of the slowest
/// reader that should count as alive; see `docs/ARCHITECTURE.md`.
/// The setting's default is the same.
pub const STALL_LIMIT: Duration = Duration::from_secs(1);

/// How many times per stall limit a waiting publisher asks the writer to look at
/// the socket's send queue.
pub const CHECKS_PER_STALL: u32 = 10;

/// The bounds of one connection's outbound buffer.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// `CONSUMER_CHANNEL_BUFFER_SIZE`: broadcast deliveries waiting.
    pub broadcast_messages: usize,
    /// `CONSUMER_CHANNEL_BUFFER_BYTES`: frame bytes waiting (pending and being
    /// written) past which broadcast deliveries are dropped.
    pub broadcast_bytes: usize,
    /// `SLOW_CONSUMER_STALL_MS`: how long without the connection accepting a byte
    /// makes a subscriber stalled.
    pub stall_limit: Duration,
}

/// Publisher flow control of one connection's broadcast buffer.
#[derive(Debug)]
pub(super) struct FlowControl {
    /// `CONSUMER_CHANNEL_BUFFER_SIZE`.
    capacity: usize,
    /// `CONSUMER_CHANNEL_BUFFER_BYTES`: frame bytes waiting (pending and being
    /// written) past which broadcast deliveries are dropped.
    byte_capacity: usize,
    /// Broadcast deliveries pushed and not yet written.
    broadcast_pending: AtomicUsize,
    /// Bytes of the batch the writer is writing and has not written yet (0 between
    /// batches).
    in_flight_bytes: AtomicUsize,
    /// Publishers waiting for this buffer to drain, and the signal they wait for.
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// Write calls that wrote something: progress, even in the middle of a large
    /// batch (whose deliveries count as written only once all of it is).
    writes: AtomicU64,
    /// Set when the subscriber made no progress for `stall_limit`; cleared when
    /// its buffer has drained.
    stalled: AtomicBool,
    /// `SLOW_CONSUMER_STALL_MS`.
    stall_limit: Duration,
    /// Asks the writer to look at the socket's send queue (see
    /// [`FlowControl::wait_for_drain`]).
    check_requested: Notify,
    /// Bytes the socket's send queue held at the writer's last look (unsent and
    /// unacknowledged), or `usize::MAX` when unknown or since the writer wrote.
    send_queue: AtomicUsize,
}

impl FlowControl {
    /// Flow control for a buffer bounded by `limits`.
    pub(super) fn new(limits: OutboxLimits) -> Self {
        FlowControl {
            capacity: limits.broadcast_messages,
            byte_capacity: limits.broadcast_bytes,
            stall_limit: limits.stall_limit,
            check_requested: Notify::new(),
            send_queue: AtomicUsize::new(usize::MAX),
            broadcast_pending: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            drain_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            writes: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        }
    }

    /// The buffer's message capacity.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes room for one broadcast delivery: the number waiting before it, or
    /// `None` when the buffer is full (nothing taken).
    pub(super) fn reserve(&self) -> Option<usize> {
        let waiting = self.broadcast_pending.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.capacity {
            self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(waiting)
    }

    /// Whether a delivery of `frame_bytes` fits beside the `waiting_bytes` of
    /// frames waiting (pending and being written). An empty buffer takes any frame,
    /// so the largest message still gets through to a subscriber that keeps up.
    pub(super) fn fits_bytes(&self, waiting_bytes: usize, frame_bytes: usize) -> bool {
        waiting_bytes == 0 || waiting_bytes + frame_bytes <= self.byte_capacity
    }

    /// Gives back room taken by [`FlowControl::reserve`] for a delivery that was not
    /// queued after all.
    pub(super) fn unreserve(&self) {
        self.broadcast_pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a publisher that just pushed, with `waiting` deliveries ahead of its
    /// own and `waiting_bytes` of frames waiting (pending and being written), should
    /// let this buffer drain. Never for a stalled subscriber.
    pub(super) fn under_pressure(&self, waiting: usize, waiting_bytes: usize) -> bool {
        (waiting >= self.high_water() || waiting_bytes >= PRESSURE_BYTES)
            && !self.stalled.load(Ordering::Acquire)
    }

    /// Bytes of the batch being written and not written yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight_bytes.load(Ordering::Acquire)
    }

    fn high_water(&self) -> usize {
        (self.capacity / 2).max(1)
    }

    fn low_water(&self) -> usize {
        self.capacity / 4
    }

    /// Waits until the broadcast buffer has drained to a quarter (of its message
    /// capacity and of [`PRESSURE_BYTES`]; `waiting_bytes` reads the bytes waiting),
    /// as long as the connection keeps accepting bytes; after `stall_limit` without
    /// progress the subscriber is marked stalled and this returns. Cancel-safe.
    ///
    /// Progress is any write call that wrote something, or the socket's send queue
    /// shrinking: a blocked writer is woken by the kernel only once a third of its
    /// send buffer (up to 4 MiB) has drained, which for a reader taking 400 KB/s is
    /// seconds. So every [`CHECKS_PER_STALL`]th of the stall limit without a write,
    /// the writer is asked to look at the send queue, and a smaller one counts.
    pub(super) async fn wait_for_drain(
        &self,
        connection_id: u64,
        waiting_bytes: impl Fn() -> usize,
    ) {
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
        let mut quiet_since = tokio::time::Instant::now();
        let check_every = self.stall_limit / CHECKS_PER_STALL;
        loop {
            if (last <= self.low_water() && waiting_bytes() <= PRESSURE_BYTES / 4)
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
                quiet_since = tokio::time::Instant::now();
                continue;
            }
            let stall_at = quiet_since + self.stall_limit;
            let check_at = (tokio::time::Instant::now() + check_every).min(stall_at);
            if tokio::time::timeout_at(check_at, notified).await.is_ok() {
                continue;
            }
            if tokio::time::Instant::now() < stall_at {
                self.check_requested.notify_one();
                continue;
            }
            self.stalled.store(true, Ordering::Release);
            debug!(
                connection = connection_id,
                stall_ms = self.stall_limit.as_millis() as u64,
                "subscriber's connection accepted nothing: not waiting for it"
            );
            return;
        }
    }

    /// Resolves when a waiting publisher asks the writer to look at the socket's
    /// send queue (a request made while the writer was busy is kept for it).
    pub(super) async fn send_queue_check_requested(&self) {
        self.check_requested.notified().await;
    }

    /// The writer looked: the socket's send queue holds `queued` bytes. Fewer than
    /// at its last look (with no write in between) means the peer took some: that
    /// is progress, and waiting publishers are told.
    pub(super) fn observe_send_queue(&self, queued: usize) {
        let before = self.send_queue.swap(queued, Ordering::AcqRel);
        if queued < before && before != usize::MAX {
            self.writes.fetch_add(1, Ordering::AcqRel);
            self.drained.notify_waiters();
        }
    }

    /// The writer took a batch of `bytes` to write.
    pub(super) fn batch_taken(&self, bytes: usize) {
        self.in_flight_bytes.store(bytes, Ordering::Release);
    }

    /// Called after each write call that wrote something: wakes publishers waiting
    /// for this subscriber, so a large batch that takes long to write is not taken
    /// for a stall.
    pub(super) fn note_write(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        // What the send queue held before this write cannot be compared with it.
        self.send_queue.store(usize::MAX, Ordering::Release);
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

    /// A batch holding `written` broadcast deliveries has been written: frees their
    /// room, clears a stall once the buffer has drained, wakes waiting publishers.
    pub(super) fn batch_written(&self, written: usize) {
        self.in_flight_bytes.store(0, Ordering::Release);
        let waiting = self.broadcast_pending.fetch_sub(written, Ordering::AcqRel) - written;
        if waiting <= self.low_water() && self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Release);
        }
        if written > 0 && self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Broadcast deliveries pushed and not yet written.
    #[cfg(test)]
    pub(super) fn broadcast_pending(&self) -> usize {
        self.broadcast_pending.load(Ordering::Acquire)
    }
}

/// Room for the control frames that answer a client's own requests.
#[derive(Debug)]
pub(super) struct ControlRoom {
    permits: Semaphore,
}

impl ControlRoom {
    /// [`CONTROL_FRAME_LIMIT`] permits.
    pub(super) fn new() -> Self {
        ControlRoom {
            permits: Semaphore::new(CONTROL_FRAME_LIMIT),
        }
    }

    /// Takes a permit if one is left. Taking may fail by a frame or two past the
    /// limit (one request can produce an error and a close); the session stops
    /// reading before that matters. Only frames that took a permit give one back.
    pub(super) fn try_take(&self) -> bool {
        match self.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back the permits of written frames.
    pub(super) fn give_back(&self, permits: usize) {
        self.permits.add_permits(permits);
    }

    /// Whether a permit is left.
    pub(super) fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Waits until a permit is left.
    pub(super) async fn wait_for_room(&self) {
        if self.permits.available_permits() == 0 {
            // Acquire then release at once: we only wait for room to exist.
            let _ = self.permits.acquire().await;
        }
    }
}
