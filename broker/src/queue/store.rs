//! How a queue keeps its ready messages in memory (FIFO order). Durable storage is
//! not here: a queue with a store also hands every change to its journal
//! ([`crate::store::QueueJournal`]), and is rebuilt from it at startup.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::{self, Instant, Stamp};
use tern_proto::Message;

/// A message waiting in a queue (or held unacked by a consumer).
///
/// It holds the [`Message`] itself, not a pointer to a shared one: a message is a
/// reference-counted view of its bytes, so each queue it reaches holds its own view
/// of one copy, and a queued message costs no allocation beyond its bytes.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The message.
    pub message: Message,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// Position in the queue's publish order; requeued messages go back in this order.
    pub order: u64,
    /// When it was published, if it is a latency sample (0 otherwise, and for
    /// redeliveries).
    pub stamp: Stamp,
    /// When it was published: wall-clock milliseconds since the Unix epoch (0 in
    /// queues without a store, which do not read the wall clock).
    pub published_ms: u64,
    /// Times it was handed to a consumer (across restarts, with a store).
    pub attempts: u32,
}

impl QueuedMessage {
    /// Payload bytes counted against `QUEUE_MAX_BYTES`.
    pub fn size(&self) -> u64 {
        self.message.payload().len() as u64
    }
}

pub use crate::store::StoreError;

/// How long a newly published message may wait among a queue's ready messages as a
/// view into its publisher's read buffer before it is copied into an allocation of
/// its own. A message taken by a consumer within this time is never copied (the
/// usual case when consumers keep up); one that waits longer no longer pins the
/// read buffer it arrived in.
pub const COPY_OUT_AFTER: Duration = Duration::from_millis(20);

/// A queue's ready messages, oldest first, with their payload bytes. Limits are
/// enforced by the queue, not here; unacked messages are tracked by the queue's
/// consumers. Everything in it is lost when the process exits (a durable queue's
/// journal keeps the rest).
///
/// Newly published messages arrive as views of their publisher's read buffer
/// ([`MemoryStore::push_arrival`]); they are always the newest entries, and
/// [`MemoryStore::copy_out_waiting`] copies out those that have waited
/// [`COPY_OUT_AFTER`]. Everything else put here has its own allocation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    messages: VecDeque<QueuedMessage>,
    bytes: u64,
    /// The newest `views` entries may be views of a read buffer.
    views: usize,
    /// Views that arrived since the last [`MemoryStore::copy_out_waiting`].
    unmarked: usize,
    /// The views before those, in runs by arrival time, oldest first: (how many of
    /// them are still here, when they arrived). With `unmarked`, they sum to `views`.
    arrivals: VecDeque<(usize, Instant)>,
}

impl MemoryStore {
    /// Appends a newly published message, which may be a view of its publisher's
    /// read buffer.
    pub fn push_arrival(&mut self, message: QueuedMessage) {
        self.bytes += message.size();
        self.messages.push_back(message);
        self.views += 1;
        self.unmarked += 1;
    }

    /// Appends a message with an allocation of its own (one read back from a
    /// store).
    pub fn push_back(&mut self, message: QueuedMessage) {
        if self.views > 0 {
            // Views must stay the newest entries: count it as one.
            return self.push_arrival(message);
        }
        self.bytes += message.size();
        self.messages.push_back(message);
    }

    /// Puts a message back at the front (requeue after nack or consumer loss). It
    /// must have an allocation of its own (see `state::compact`).
    pub fn push_front(&mut self, message: QueuedMessage) {
        self.bytes += message.size();
        self.messages.push_front(message);
    }

    /// Takes the oldest message.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let was_view = self.views == self.messages.len();
        let message = self.messages.pop_front()?;
        self.bytes -= message.size();
        if was_view {
            self.views -= 1;
            match self.arrivals.front_mut() {
                Some((1, _)) => {
                    self.arrivals.pop_front();
                }
                Some((count, _)) => *count -= 1,
                None => self.unmarked -= 1,
            }
        }
        if self.messages.is_empty() && self.messages.capacity() > 1024 {
            // A drained burst should not pin its peak memory.
            self.messages = VecDeque::new();
        }
        Some(message)
    }

    /// Notes when the views that arrived since the last call did (now), and
    /// copies out every view that has waited [`COPY_OUT_AFTER`]. Called after
    /// each batch of publishes and by the broker's housekeeping; reads the clock
    /// only when views are waiting.
    pub fn copy_out_waiting(&mut self) {
        if self.views == 0 {
            return;
        }
        let now = clock::now();
        if self.unmarked > 0 {
            // Arrivals close together share a run (dated by its first, so none
            // waits longer than it should): a handful of runs per queue.
            match self.arrivals.back_mut() {
                Some((count, since)) if now.duration_since(*since) < COPY_OUT_AFTER / 4 => {
                    *count += self.unmarked;
                }
                _ => self.arrivals.push_back((self.unmarked, now)),
            }
            self.unmarked = 0;
        }
        while let Some(&(count, since)) = self.arrivals.front() {
            if now.duration_since(since) < COPY_OUT_AFTER {
                break;
            }
            let oldest_view = self.messages.len() - self.views;
            for queued in self.messages.range_mut(oldest_view..oldest_view + count) {
                queued.message = queued.message.compacted();
            }
            self.views -= count;
            self.arrivals.pop_front();
        }
    }

    /// Every ready message, taken out, each with an allocation of its own.
    pub fn take_all_copied_out(&mut self) -> Vec<QueuedMessage> {
        let oldest_view = self.messages.len() - self.views;
        for queued in self.messages.range_mut(oldest_view..) {
            queued.message = queued.message.compacted();
        }
        self.take_all()
    }

    /// Every ready message, taken out (to be dropped: purge, delete).
    pub fn take_all(&mut self) -> Vec<QueuedMessage> {
        self.views = 0;
        self.unmarked = 0;
        self.arrivals.clear();
        self.bytes = 0;
        std::mem::take(&mut self.messages).into()
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Payload bytes of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when no message is ready.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(order: u64) -> QueuedMessage {
        QueuedMessage {
            message: Message::new("q", format!("m{order}")).expect("valid"),
            redelivered: false,
            order,
            stamp: 0,
            published_ms: 0,
            attempts: 0,
        }
    }

    /// Where each ready message's bytes live, oldest first.
    fn addresses(store: &MemoryStore) -> Vec<*const u8> {
        store
            .messages
            .iter()
            .map(|queued| queued.message.encoded().as_ptr())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn views_that_wait_are_copied_out_and_those_taken_soon_are_not() {
        let mut store = MemoryStore::default();
        let first: Vec<QueuedMessage> = (0..3).map(queued).collect();
        let originals: Vec<*const u8> = first
            .iter()
            .map(|queued| queued.message.encoded().as_ptr())
            .collect();
        for queued in first {
            store.push_arrival(queued);
        }
        store.copy_out_waiting();
        assert_eq!(addresses(&store), originals, "fresh views are left alone");

        // One is taken within the time: never copied.
        let taken = store.pop_front().expect("ready");
        assert_eq!(taken.message.encoded().as_ptr(), originals[0]);

        // Later arrivals join; the first run reaches its time.
        tokio::time::advance(COPY_OUT_AFTER / 2).await;
        store.push_arrival(queued(3));
        let late = addresses(&store)[2];
        store.copy_out_waiting();
        tokio::time::advance(COPY_OUT_AFTER / 2).await;
        store.copy_out_waiting();
        let now = addresses(&store);
        assert_ne!(now[0], originals[1], "waited its time: copied out");
        assert_ne!(now[1], originals[2]);
        assert_eq!(now[2], late, "the later run has not waited long enough");
        assert_eq!(store.views, 1);

        tokio::time::advance(COPY_OUT_AFTER).await;
        store.copy_out_waiting();
        assert_ne!(addresses(&store)[2], late);
        assert_eq!(store.views, 0);
        assert!(store.arrivals.is_empty());
        let orders: Vec<u64> = std::iter::from_fn(|| store.pop_front())
            .map(|queued| queued.order)
            .collect();
        assert_eq!(orders, [1, 2, 3], "order kept");
        assert_eq!(store.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bookkeeping_follows_pops_requeues_and_takes() {
        let mut store = MemoryStore::default();
        store.push_back(queued(0));
        for order in 1..5 {
            store.push_arrival(queued(order));
        }
        store.copy_out_waiting();
        store.push_arrival(queued(5));
        assert_eq!(store.views, 5);
        store.push_front(queued(99));
        // Popping the two that are not views leaves the count alone.
        assert_eq!(store.pop_front().map(|q| q.order), Some(99));
        assert_eq!(store.pop_front().map(|q| q.order), Some(0));
        assert_eq!(store.views, 5);
        // Popping views takes them from the oldest run, then from the unmarked.
        for order in 1..5 {
            assert_eq!(store.pop_front().map(|q| q.order), Some(order));
        }
        assert!(store.arrivals.is_empty());
        assert_eq!((store.views, store.unmarked), (1, 1));
        // A message with its own allocation behind a view counts as one.
        store.push_back(queued(6));
        assert_eq!(store.views, 2);
        let all = store.take_all_copied_out();
        assert_eq!(all.iter().map(|q| q.order).collect::<Vec<_>>(), [5, 6]);
        assert_eq!((store.views, store.unmarked, store.len()), (0, 0, 0));
        tokio::time::advance(COPY_OUT_AFTER * 2).await;
        store.copy_out_waiting();
    }
}
