//! Named FIFO queues with competing consumers, prefetch windows, acks and redelivery.
//!
//! Each queue has its own lock (no broker-wide lock on this path). Publishing,
//! acking and consumer changes all end in [`Queue`]'s dispatch step, which hands the
//! oldest ready messages to consumers with room in their window, round-robin.
//!
//! Delivery ids are `(sid << 32) | n` where `n` counts deliveries of that
//! subscription (skipping ids still unacked), so a session can find the queue of an
//! ACK from its own subscription table without a shared map.
//!
//! - this module — [`Queue`]: publish, consumers, acks, depth;
//! - `state.rs` — the state behind the lock and the steps operations share;
//! - `dispatch.rs` — handing ready messages to consumers (FIFO and filtered);
//! - `filtered.rs` — ready messages indexed by consumer filter;
//! - `admin.rs` — purge, delete, expiry;
//! - [`registry`](QueueRegistry) — queues by name; `store.rs` — the storage seam.

mod admin;
mod batch;
mod dispatch;
mod filtered;
mod registry;
mod restore;
mod state;
mod store;
mod unacked;

pub use admin::Closed;
pub use batch::{BACKLOG_HIGH, BACKLOG_LOW};
pub use registry::{QueueRegistry, RegistryError};
pub use store::{MemoryStore, QueuedMessage, StoreError, COPY_OUT_AFTER};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytestring::ByteString;

use crate::clock::{self, Stamp};
use crate::memory::{charge, MemoryBudget};
use crate::outbound::Outbox;
use crate::store::{Mark, MessageRecord, PendingConfirm, QueueJournal};
use filtered::FilteredReady;
use rustc_hash::FxHashMap;
use state::{
    compact, deliver, find_consumer, next_consumer_with_room, take_unacked, Consumer, QueueState,
};
use tern_proto::Filter;
use tern_proto::Message;

/// Capacity limits of every queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// `QUEUE_MAX_MESSAGES`: ready + unacked messages.
    pub max_messages: usize,
    /// `QUEUE_MAX_BYTES`: ready + unacked payload bytes.
    pub max_bytes: u64,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue is at one of its limits.
    #[error("queue `{name}` is full ({messages} messages, {bytes} bytes held; limits {max_messages} messages, {max_bytes} bytes)")]
    Full {
        /// The queue.
        name: ByteString,
        /// Messages held.
        messages: usize,
        /// Payload bytes held.
        bytes: u64,
        /// `QUEUE_MAX_MESSAGES`.
        max_messages: usize,
        /// `QUEUE_MAX_BYTES`.
        max_bytes: u64,
    },
    /// ACK/NACK of a delivery that is not outstanding for this consumer.
    #[error("delivery {0:#x} is unknown or already settled")]
    UnknownDelivery(u64),
    /// The consumer is not attached to this queue.
    #[error("subscription {0} is not a consumer of this queue")]
    UnknownConsumer(u32),
    /// The broker holds `MEMORY_LIMIT` bytes of queued messages.
    #[error("the broker's MEMORY_LIMIT of {limit} bytes of queued messages is reached ({used} held); publishes to queues are refused until they drain below 90%")]
    MemoryLimit {
        /// The limit.
        limit: u64,
        /// Bytes charged now.
        used: u64,
    },
    /// The queue has been deleted (by an operator, or expired): publish to the
    /// queues routing finds now, or bind again.
    #[error("queue `{0}` was deleted")]
    Deleted(ByteString),
    /// A delete without `force` of a queue that has consumers.
    #[error(
        "queue `{name}` has {consumers} consumer(s) attached; delete it with force to detach them"
    )]
    InUse {
        /// The queue.
        name: ByteString,
        /// Consumers attached.
        consumers: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The subscription id a delivery id belongs to.
pub fn delivery_sid(delivery_id: u64) -> u32 {
    (delivery_id >> 32) as u32
}

/// Ready and unacked counts of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// Messages waiting for a consumer.
    pub ready: usize,
    /// Messages delivered and not yet acked.
    pub unacked: usize,
    /// Consumers attached.
    pub consumers: usize,
    /// Payload bytes held (ready and unacked).
    pub bytes: u64,
}

/// A named FIFO queue bound to a subject pattern.
#[derive(Debug)]
pub struct Queue {
    name: ByteString,
    pattern: ByteString,
    limits: QueueLimits,
    state: Mutex<QueueState>,
    consumer_count: AtomicUsize,
    /// Publisher flow control: set while the ready backlog is above
    /// [`BACKLOG_HIGH`] with consumers attached; cleared, waking waiting
    /// publishers, once it is below [`BACKLOG_LOW`] (see `batch.rs`).
    backlogged: AtomicBool,
    backlog_drained: tokio::sync::Notify,
    draining: Arc<AtomicBool>,
    /// Publishes this queue refused because it was full (for `/metrics`).
    refused_full: AtomicU64,
    /// Publishes this queue refused at the broker's `MEMORY_LIMIT`.
    refused_memory: AtomicU64,
    /// Publishes this queue refused because its store could not take them.
    refused_storage: AtomicU64,
    /// The broker-wide charge of queued messages.
    memory: Arc<MemoryBudget>,
}

impl Queue {
    /// A new, empty queue keeping ready messages in `store`, and handing every
    /// change to `journal` when it has one (a durable queue).
    pub fn new(
        name: ByteString,
        pattern: ByteString,
        limits: QueueLimits,
        journal: Option<Arc<dyn QueueJournal>>,
        draining: Arc<AtomicBool>,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        Queue {
            name,
            pattern,
            limits,
            state: Mutex::new(QueueState {
                store: MemoryStore::default(),
                journal,
                consumers: Vec::new(),
                cursor: 0,
                unacked_messages: 0,
                unacked_bytes: 0,
                next_order: 0,
                idle_since: Some(clock::now()),
                deleted: false,
                charged: 0,
                filtered: None,
                positions: FxHashMap::default(),
            }),
            consumer_count: AtomicUsize::new(0),
            backlogged: AtomicBool::new(false),
            backlog_drained: tokio::sync::Notify::new(),
            draining,
            refused_full: AtomicU64::new(0),
            refused_memory: AtomicU64::new(0),
            refused_storage: AtomicU64::new(0),
            memory,
        }
    }

    /// Publishes this queue refused at the broker's `MEMORY_LIMIT`.
    pub fn refused_memory(&self) -> u64 {
        self.refused_memory.load(Ordering::Relaxed)
    }

    /// Publishes this queue refused because its store could not take them.
    pub fn refused_storage(&self) -> u64 {
        self.refused_storage.load(Ordering::Relaxed)
    }

    /// Bytes and segments this queue has on disk (`None`: it has no store).
    pub fn disk_usage(&self) -> Option<(u64, u64)> {
        let state = self.lock();
        state.journal.as_ref().map(|journal| {
            let gauges = journal.gauges();
            (
                gauges.bytes.load(Ordering::Relaxed),
                gauges.segments.load(Ordering::Relaxed),
            )
        })
    }

    /// Gives back what a message that left the queue was charged.
    fn uncharge(&self, state: &mut QueueState, message: &Message) {
        let bytes = charge(message);
        state.charged -= bytes;
        self.memory.release(bytes);
    }

    /// A message leaves the queue for good (acked, discarded, purged): its charge
    /// is given back and its journal told.
    fn settled(&self, state: &mut QueueState, queued: &QueuedMessage) {
        self.uncharge(state, &queued.message);
        if let Some(journal) = &state.journal {
            journal.mark(queued.order, Mark::Settled);
        }
    }

    /// Publishes this queue refused because it was full, since it was created.
    pub fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    /// The queue's name.
    pub fn name(&self) -> &ByteString {
        &self.name
    }

    /// The pattern the queue is bound to.
    pub fn pattern(&self) -> &ByteString {
        &self.pattern
    }

    /// Whether any consumer is attached (lock-free, for the request path).
    pub fn has_consumers(&self) -> bool {
        self.consumer_count.load(Ordering::Acquire) > 0
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock would be a bug; the state is still consistent
        // enough to keep serving, so recover rather than take the broker down.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Stores a message, or refuses it when the queue is full. Hands it straight to a
    /// consumer when one has room and nothing is waiting ahead of it.
    /// `stamp` marks a latency sample (0: not sampled). A durable queue appends it to
    /// its journal first; `confirm` (a confirmed publish) is then held until the
    /// append is durable.
    pub fn publish(
        &self,
        message: Message,
        stamp: Stamp,
        confirm: Option<&Arc<PendingConfirm>>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let published = self.publish_locked(&mut state, message, stamp, confirm, false);
        state.store.copy_out_waiting();
        published
    }

    /// Copies out the ready messages that have waited long as views of their
    /// publishers' read buffers (see [`COPY_OUT_AFTER`]); the broker's
    /// housekeeping calls it for queues nobody publishes to any more.
    pub fn copy_out_waiting(&self) {
        self.lock().store.copy_out_waiting();
    }

    /// [`Queue::publish`] under a lock already held (one lock for a batch).
    /// `precharged`: the caller has charged the message to `MEMORY_LIMIT` already
    /// (for a whole batch at once, having found the queue not deleted); a refusal
    /// gives that charge back.
    fn publish_locked(
        &self,
        state: &mut QueueState,
        message: Message,
        stamp: Stamp,
        confirm: Option<&Arc<PendingConfirm>>,
        precharged: bool,
    ) -> Result<(), QueueError> {
        let size = message.payload().len() as u64;
        let charged = charge(&message);
        if state.deleted {
            return Err(QueueError::Deleted(self.name.clone()));
        }
        let messages = state.ready_len() + state.unacked_messages;
        let bytes = state.ready_bytes() + state.unacked_bytes;
        if messages >= self.limits.max_messages || bytes + size > self.limits.max_bytes {
            if precharged {
                self.memory.release(charged);
            }
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(QueueError::Full {
                name: self.name.clone(),
                messages,
                bytes,
                max_messages: self.limits.max_messages,
                max_bytes: self.limits.max_bytes,
            });
        }
        if !precharged && !self.memory.try_charge(charged) {
            self.refused_memory.fetch_add(1, Ordering::Relaxed);
            return Err(QueueError::MemoryLimit {
                limit: self.memory.limit(),
                used: self.memory.used(),
            });
        }
        let order = state.next_order;
        let mut published_ms = 0;
        if let Some(journal) = &state.journal {
            published_ms = clock::wall_millis();
            let record = MessageRecord {
                id: order,
                published_ms,
                deliver_at_ms: 0,
                priority: 0,
                attempts: 0,
                message: message.clone(),
            };
            if let Err(error) = journal.append(record, confirm) {
                self.memory.release(charged);
                self.refused_storage.fetch_add(1, Ordering::Relaxed);
                return Err(QueueError::Store(error));
            }
        }
        state.charged += charged;
        state.next_order += 1;
        state.idle_since = None;
        let draining = self.draining.load(Ordering::Acquire);
        let queued = QueuedMessage {
            message,
            redelivered: false,
            order,
            stamp,
            published_ms,
            attempts: 0,
        };
        if state.filtered.is_some() {
            let classes = state
                .filtered
                .as_ref()
                .map(|ready| ready.classes_for(&queued))
                .unwrap_or_default();
            // Straight to a consumer with room when nothing of its class waits
            // ahead of the message (the common case: consumers keep up).
            let queued = match self.deliver_direct(state, &classes, queued, draining) {
                Ok(()) => return Ok(()),
                Err(queued) => compact(queued),
            };
            if let Some(ready) = state.filtered.as_mut() {
                ready.insert(queued, &classes);
            }
            self.fill_classes(state, &classes);
            return Ok(());
        }
        if state.store.is_empty() && !draining {
            if let Some(index) = next_consumer_with_room(state) {
                if let Err(queued) = deliver(state, index, queued) {
                    state.store.push_front(compact(queued));
                    self.dispatch(state);
                }
                return Ok(());
            }
        }
        // It waits as a view of the publisher's read buffer, copied out if it
        // waits long (`MemoryStore::copy_out_waiting`, after the batch).
        state.store.push_arrival(queued);
        Ok(())
    }

    /// Attaches a consumer with a prefetch window and delivers what fits.
    /// `before_deliveries` runs once it is attached and before anything is delivered
    /// to it (the session sends SUBSCRIBE_OK there). Fails if the queue was deleted
    /// since it was found (bind again).
    pub fn add_consumer(
        &self,
        connection_id: u64,
        sid: u32,
        outbox: Arc<Outbox>,
        prefetch: u32,
        filter: Option<Arc<Filter>>,
        before_deliveries: impl FnOnce(),
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.deleted {
            return Err(QueueError::Deleted(self.name.clone()));
        }
        before_deliveries();
        state.idle_since = None;
        if filter.is_some() && state.filtered.is_none() {
            // The first filtered consumer: index the ready messages by filter, and
            // put the consumers so far in the class that matches everything.
            let taken = state.store.take_all_copied_out();
            let mut ready = Box::new(FilteredReady::new(taken));
            let everything = Arc::new(Filter::all());
            for (index, consumer) in state.consumers.iter_mut().enumerate() {
                let id = (consumer.connection_id, consumer.sid);
                consumer.class = Some(ready.join(everything.clone(), id, index));
            }
            state.filtered = Some(ready);
        }
        let position = state.consumers.len();
        let class = state.filtered.as_mut().map(|ready| {
            let filter = filter.unwrap_or_else(|| Arc::new(Filter::all()));
            ready.join(filter, (connection_id, sid), position)
        });
        state.positions.insert((connection_id, sid), position);
        state.consumers.push(Consumer {
            connection_id,
            sid,
            outbox,
            prefetch,
            unacked: unacked::Unacked::default(),
            class,
        });
        self.consumer_count
            .store(state.consumers.len(), Ordering::Release);
        let index = state.consumers.len() - 1;
        self.dispatch_to(&mut state, index);
        Ok(())
    }

    /// Detaches a consumer; its unacked messages go back to the front, in order,
    /// flagged redelivered, and are offered to the remaining consumers.
    pub fn remove_consumer(&self, connection_id: u64, sid: u32) {
        let mut state = self.lock();
        let Some(index) = find_consumer(&state, connection_id, sid) else {
            return;
        };
        let consumer = state.consumers.remove(index);
        state.rebuild_positions();
        if let Some(ready) = &mut state.filtered {
            if let Some(class) = consumer.class {
                ready.leave(class, (connection_id, sid));
            }
            ready.consumer_removed(index);
        }
        self.consumer_count
            .store(state.consumers.len(), Ordering::Release);
        let mut unacked: Vec<QueuedMessage> = consumer.unacked.into_messages();
        unacked.sort_unstable_by_key(|queued| std::cmp::Reverse(queued.order));
        for queued in unacked {
            state.unacked_messages -= 1;
            state.unacked_bytes -= queued.size();
            let requeued = compact(QueuedMessage {
                redelivered: true,
                stamp: 0,
                ..queued
            });
            let classes = state.store_ready(requeued, true);
            self.fill_classes(&mut state, &classes);
        }
        if state.filtered.is_none() {
            self.dispatch(&mut state);
        }
        self.note_backlog(&state);
        state.note_idleness();
    }

    /// Settles a delivery as done.
    pub fn ack(&self, connection_id: u64, sid: u32, delivery_id: u64) -> Result<(), QueueError> {
        let mut unknown = Vec::new();
        if delivery_sid(delivery_id) == sid {
            self.ack_many(connection_id, &[delivery_id], &mut unknown);
        } else {
            unknown.push(delivery_id);
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(QueueError::UnknownDelivery(delivery_id))
        }
    }

    /// Rejects a delivery: back to the front of the queue (flagged redelivered) when
    /// `requeue`, otherwise discarded. Returns whether it was discarded.
    pub fn nack(
        &self,
        connection_id: u64,
        sid: u32,
        delivery_id: u64,
        requeue: bool,
    ) -> Result<bool, QueueError> {
        let mut state = self.lock();
        let (index, queued) = take_unacked(&mut state, connection_id, sid, delivery_id)?;
        if requeue {
            let classes = state.store_ready(
                compact(QueuedMessage {
                    redelivered: true,
                    stamp: 0,
                    ..queued
                }),
                true,
            );
            self.fill_classes(&mut state, &classes);
        } else {
            self.settled(&mut state, &queued);
        }
        self.dispatch_to(&mut state, index);
        state.note_idleness();
        Ok(!requeue)
    }

    /// Changes a consumer's window; 0 pauses it.
    pub fn set_prefetch(
        &self,
        connection_id: u64,
        sid: u32,
        prefetch: u32,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let index =
            find_consumer(&state, connection_id, sid).ok_or(QueueError::UnknownConsumer(sid))?;
        state.consumers[index].prefetch = prefetch;
        self.dispatch_to(&mut state, index);
        Ok(())
    }

    /// Unacked deliveries held by one consumer.
    pub fn unacked_for(&self, connection_id: u64, sid: u32) -> usize {
        let state = self.lock();
        find_consumer(&state, connection_id, sid)
            .map_or(0, |index| state.consumers[index].unacked.len())
    }

    /// Current ready / unacked / consumer counts.
    pub fn depth(&self) -> QueueDepth {
        let state = self.lock();
        QueueDepth {
            ready: state.ready_len(),
            unacked: state.unacked_messages,
            consumers: state.consumers.len(),
            bytes: state.ready_bytes() + state.unacked_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(payload: &'static str) -> Message {
        Message::new("jobs", payload).expect("a valid message")
    }

    fn queue(max_messages: usize) -> Queue {
        Queue::new(
            "jobs".into(),
            "jobs".into(),
            QueueLimits {
                max_messages,
                max_bytes: 1 << 20,
            },
            None,
            Arc::new(AtomicBool::new(false)),
            Arc::new(MemoryBudget::new(0)),
        )
    }

    fn consumer(id: u64) -> Arc<Outbox> {
        Outbox::new(
            id,
            100,
            Arc::new(crate::stats::Stats::default()),
            crate::clock::now(),
        )
    }

    fn received(outbox: &Outbox) -> Vec<(u64, bool, Bytes)> {
        crate::outbound::take_frames(outbox)
            .into_iter()
            .filter_map(|frame| match frame {
                tern_proto::Frame::Deliver(deliver) => Some((
                    deliver.delivery_id,
                    deliver.redelivered,
                    deliver.message.payload_bytes(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn prefetch_bounds_deliveries_and_acks_release_more() {
        let queue = queue(100);
        for payload in ["a", "b", "c"] {
            queue.publish(message(payload), 0, None).expect("room");
        }
        let outbox = consumer(1);
        queue
            .add_consumer(1, 7, outbox.clone(), 2, None, || {})
            .expect("attached");
        let first = received(&outbox);
        assert_eq!(
            first.iter().map(|d| d.2.clone()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(delivery_sid(first[0].0), 7);
        queue.ack(1, 7, first[0].0).expect("outstanding");
        assert!(matches!(
            queue.ack(1, 7, first[0].0),
            Err(QueueError::UnknownDelivery(_))
        ));
        assert_eq!(received(&outbox)[0].2, "c");
    }

    #[test]
    fn a_removed_consumers_messages_come_back_first_in_order_flagged_redelivered() {
        let queue = queue(100);
        for payload in ["a", "b", "c"] {
            queue.publish(message(payload), 0, None).expect("room");
        }
        let first = consumer(1);
        queue
            .add_consumer(1, 1, first.clone(), 2, None, || {})
            .expect("attached");
        assert_eq!(received(&first).len(), 2);
        queue.remove_consumer(1, 1);
        let second = consumer(2);
        queue
            .add_consumer(2, 1, second.clone(), 10, None, || {})
            .expect("attached");
        let got = received(&second);
        let payloads: Vec<_> = got.iter().map(|d| (d.2.clone(), d.1)).collect();
        assert_eq!(
            payloads,
            vec![("a".into(), true), ("b".into(), true), ("c".into(), false)]
        );
    }

    #[test]
    fn a_full_queue_refuses_and_counts_unacked_messages() {
        let queue = queue(2);
        queue
            .add_consumer(1, 1, consumer(1), 1, None, || {})
            .expect("attached");
        queue
            .publish(message("a"), 0, None)
            .expect("delivered, unacked");
        queue.publish(message("b"), 0, None).expect("ready");
        assert!(matches!(
            queue.publish(message("c"), 0, None),
            Err(QueueError::Full { messages: 2, .. })
        ));
        assert_eq!(
            queue.depth(),
            QueueDepth {
                ready: 1,
                unacked: 1,
                consumers: 1,
                bytes: 2,
            }
        );
    }

    #[test]
    fn purge_keeps_unacked_and_delete_refuses_everything_after() {
        let queue = queue(100);
        let outbox = consumer(1);
        queue
            .add_consumer(1, 1, outbox.clone(), 1, None, || {})
            .expect("attached");
        for payload in ["a", "b", "c"] {
            queue.publish(message(payload), 0, None).expect("room");
        }
        assert_eq!(queue.purge(), 2, "the two ready ones");
        assert_eq!(queue.depth().unacked, 1);
        assert!(matches!(
            queue.close(false),
            Err(QueueError::InUse { consumers: 1, .. })
        ));
        let closed = queue.close(true).expect("forced");
        assert_eq!((closed.messages, closed.consumers.len()), (1, 1));
        assert!(matches!(
            queue.publish(message("d"), 0, None),
            Err(QueueError::Deleted(_))
        ));
        assert!(matches!(
            queue.add_consumer(2, 1, consumer(2), 1, None, || {}),
            Err(QueueError::Deleted(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_empty_queue_without_consumers_expires() {
        let after = std::time::Duration::from_secs(300);
        let queue = queue(100);
        queue.publish(message("a"), 0, None).expect("room");
        tokio::time::advance(after * 2).await;
        assert!(
            !queue.expire_if_idle(clock::now(), after),
            "it holds a message"
        );
        let outbox = consumer(1);
        queue
            .add_consumer(1, 1, outbox.clone(), 1, None, || {})
            .expect("attached");
        let delivery = received(&outbox)[0].0;
        queue.ack(1, 1, delivery).expect("acked");
        queue.remove_consumer(1, 1);
        tokio::time::advance(after - std::time::Duration::from_secs(1)).await;
        assert!(
            !queue.expire_if_idle(clock::now(), after),
            "not idle long enough"
        );
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(queue.expire_if_idle(clock::now(), after));
    }

    fn for_device(device: &str, payload: &'static str) -> Message {
        let headers = [tern_proto::Header::new("device", device)];
        Message::encode("jobs", None, &headers, payload.as_bytes()).expect("valid")
    }

    fn filter(text: &str) -> Option<Arc<Filter>> {
        Some(Arc::new(Filter::parse(text).expect("valid")))
    }

    #[test]
    fn filtered_consumers_requeue_to_their_class_and_new_classes_find_waiting_messages() {
        let queue = queue(100);
        let first = consumer(1);
        queue
            .add_consumer(1, 1, first.clone(), 10, filter("device = 'a'"), || {})
            .expect("attached");
        for (device, payload) in [("a", "a1"), ("b", "b1"), ("a", "a2")] {
            queue
                .publish(for_device(device, payload), 0, None)
                .expect("room");
        }
        let got: Vec<_> = received(&first).into_iter().map(|d| d.2).collect();
        assert_eq!(got, vec!["a1", "a2"]);
        assert_eq!(queue.depth().ready, 1, "b1 waits for a consumer of b");
        // The consumer of a leaves: its two come back, for another consumer of a.
        queue.remove_consumer(1, 1);
        let second = consumer(2);
        queue
            .add_consumer(2, 1, second.clone(), 10, filter("device = 'a'"), || {})
            .expect("attached");
        let again: Vec<_> = received(&second).into_iter().map(|d| (d.2, d.1)).collect();
        assert_eq!(again, vec![("a1".into(), true), ("a2".into(), true)]);
        // A consumer of b arrives later and finds b1, which waited.
        let third = consumer(3);
        queue
            .add_consumer(3, 1, third.clone(), 10, filter("device = 'b'"), || {})
            .expect("attached");
        assert_eq!(received(&third)[0].2, "b1");
        // An unfiltered consumer takes what matches nobody else.
        let any = consumer(4);
        queue
            .add_consumer(4, 1, any.clone(), 10, None, || {})
            .expect("attached");
        queue.publish(for_device("c", "c1"), 0, None).expect("room");
        assert_eq!(received(&any)[0].2, "c1");
        assert_eq!(queue.depth().ready, 0);
    }

    /// Classes know where their consumers are in the queue's list: after one
    /// ahead of them leaves, each message still reaches its own consumer (with
    /// acks that open its window again).
    #[test]
    fn filtered_deliveries_follow_their_consumers_when_one_ahead_leaves() {
        let queue = queue(100);
        let outboxes: Vec<_> = (1..=4).map(consumer).collect();
        for (sid, device) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            queue
                .add_consumer(
                    1,
                    sid,
                    outboxes[sid as usize - 1].clone(),
                    1,
                    filter(&format!("device = '{device}'")),
                    || {},
                )
                .expect("attached");
        }
        queue.remove_consumer(1, 2);
        for round in 0..3 {
            for device in ["a", "b", "c", "d"] {
                let payload: &'static str = Box::leak(format!("{device}{round}").into_boxed_str());
                queue
                    .publish(for_device(device, payload), 0, None)
                    .expect("room");
            }
            for (sid, device) in [(1u32, "a"), (3, "c"), (4, "d")] {
                let got = received(&outboxes[sid as usize - 1]);
                assert_eq!(got.len(), 1, "{device}: prefetch 1");
                assert_eq!(got[0].2, format!("{device}{round}"));
                let mut unknown = Vec::new();
                queue.ack_many(1, &[got[0].0], &mut unknown);
                assert!(unknown.is_empty());
            }
        }
        assert!(received(&outboxes[1]).is_empty(), "b's consumer left");
        assert_eq!(
            queue.depth().ready,
            3,
            "b's messages wait for a consumer of b"
        );
    }
}
