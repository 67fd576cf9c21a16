//! Broadcast fan-out: one published message to every matching subscription.

use std::sync::Arc;

use crate::clock::Stamp;
use crate::outbound::{MissedCounter, Outbox, Pushed};
use crate::queue::Queue;
use tern_proto::Message;

/// A broadcast subscription as the router sees it: where to push, under which id.
#[derive(Debug, Clone)]
pub struct BroadcastTarget {
    /// The subscription id on its connection.
    pub sid: u32,
    /// The connection's outbox.
    pub outbox: Arc<Outbox>,
    /// Messages dropped for this subscription since its last LAGGED report.
    pub missed: MissedCounter,
}

impl BroadcastTarget {
    /// Whether this target is subscription `sid` of connection `connection_id`.
    pub fn is(&self, connection_id: u64, sid: u32) -> bool {
        self.sid == sid && self.outbox.connection_id() == connection_id
    }
}

/// What a read batch leaves for some queues, by queue, in order: applied when the
/// batch ends, so each queue's lock is taken once per batch, not per item.
#[derive(Debug)]
pub struct ByQueue<T> {
    /// Each queue with its items, in the order they came.
    pub entries: Vec<(Arc<Queue>, Vec<T>)>,
}

impl<T> Default for ByQueue<T> {
    fn default() -> Self {
        ByQueue {
            entries: Vec::new(),
        }
    }
}

/// A read batch's fire-and-forget publishes to queues.
pub type QueueBatch = ByQueue<QueuedPublish>;

/// One message for a queue, with its latency stamp.
pub type QueuedPublish = (Message, Stamp);

impl<T> ByQueue<T> {
    /// Adds an item for `queue`.
    pub fn push(&mut self, queue: &Arc<Queue>, item: T) {
        // A batch touches few queues (often one, even for thousands of filtered
        // consumers of it): a scan beats a map.
        match self
            .entries
            .iter_mut()
            .find(|(known, _)| Arc::ptr_eq(known, queue))
        {
            Some((_, items)) => items.push(item),
            None => self.entries.push((queue.clone(), vec![item])),
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a read batch leaves for its end.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Fire-and-forget publishes to queues, stored when the batch ends
    /// ([`crate::broker::Broker::flush_queue_batch`]).
    pub queued: QueueBatch,
    /// Queues the batch left with a deep backlog that consumers work through: the
    /// publisher waits for them before reading more.
    pub backlogged: Vec<Arc<Queue>>,
    /// The batch's acks, by queue (delivery ids, each naming its subscription),
    /// settled together when it ends: one lock per queue, however many of the
    /// connection's consumers of that queue they are for.
    pub acks: ByQueue<u64>,
}

impl Deferred {
    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.acks.is_empty()
    }
}

/// Subscribers' outboxes one read batch of publishes touched, and what to do about
/// them when the batch is done.
#[derive(Debug, Default)]
pub struct Touched {
    /// What waits for the end of the batch, boxed and made on first use (an idle
    /// connection carries one pointer for it).
    pub deferred: Option<Box<Deferred>>,
    /// Set by the publisher for a fire-and-forget publish: its queue part may wait
    /// in `queued` (a confirmed publish is stored at once, for its answer).
    pub defer_queues: bool,
    /// Outboxes over half full: the publisher lets them drain before reading more.
    pub pressure: Vec<Arc<Outbox>>,
    /// Outboxes whose writers were idle: woken once the batch is pushed.
    pub idle_writers: Vec<Arc<Outbox>>,
}

impl Touched {
    /// What waits for the end of the batch (made on first use).
    pub fn deferred(&mut self) -> &mut Deferred {
        self.deferred.get_or_insert_with(Box::default)
    }

    /// Queues the last batch left backlogged (taken).
    pub fn take_backlogged(&mut self) -> Vec<Arc<Queue>> {
        self.deferred
            .as_mut()
            .map(|deferred| std::mem::take(&mut deferred.backlogged))
            .unwrap_or_default()
    }

    /// Wakes the idle writers this batch filled: one wake-up per subscriber per
    /// batch.
    pub fn wake_writers(&mut self) {
        for outbox in self.idle_writers.drain(..) {
            outbox.wake_writer();
        }
    }
}

/// Pushes `message` to every target: each encodes it into its connection's pending
/// buffer (large payloads are shared, not copied). A full target drops its copy
/// (counted and reported by its outbox); the others are unaffected. Targets whose
/// buffer is over half full are added to `touched.pressure` (once each), so the
/// publisher can let them drain; targets whose writer is idle to
/// `touched.idle_writers`, for the publisher to wake. `stamp` marks a latency
/// sample (0: not sampled).
pub fn fan_out(
    targets: &[BroadcastTarget],
    message: &Message,
    stamp: Stamp,
    touched: &mut Touched,
) {
    for target in targets {
        let pushed = target
            .outbox
            .push_broadcast(target.sid, &target.missed, message, stamp);
        let Pushed::Queued {
            under_pressure,
            wake_writer,
        } = pushed
        else {
            continue;
        };
        if wake_writer {
            // Taken from the outbox once until its writer runs: no duplicates.
            touched.idle_writers.push(target.outbox.clone());
        }
        if under_pressure
            && !touched
                .pressure
                .iter()
                .any(|outbox| Arc::ptr_eq(outbox, &target.outbox))
        {
            touched.pressure.push(target.outbox.clone());
        }
    }
}
