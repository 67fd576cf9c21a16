//! Batches: a read batch's publishes to one queue, or acks of one consumer, under
//! one lock and one dispatch — so a queue's lock is taken per batch, not per
//! message, by publishers and consumers alike. And publisher flow control: a
//! fire-and-forget publisher whose queue has a deep backlog while consumers work
//! through it waits for them, as it does for a broadcast subscriber's buffer,
//! instead of growing the queue at full speed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::state::{find_consumer, settle_unacked, QueueState};
use super::{delivery_sid, Queue, QueueError};
use crate::clock::Stamp;
use crate::memory::charge;
use crate::store::Mark;
use tern_proto::Message;

/// Ready messages above which a queue with consumers holds up fire-and-forget
/// publishers (about a second of work for fast consumers; far below
/// `QUEUE_MAX_MESSAGES`' default).
pub const BACKLOG_HIGH: usize = 8_192;
/// The backlog below which held-up publishers continue.
pub const BACKLOG_LOW: usize = BACKLOG_HIGH / 2;

impl Queue {
    /// Publishes each message of `batch` in order (as [`Queue::publish`] without a
    /// confirm) under one lock; the refusals go to `refused`, in order. A refusal
    /// carries its message back only when the queue was deleted (the publisher then
    /// routes it to the queues of now); others need only their error.
    /// Returns whether the queue is now backlogged: more than [`BACKLOG_HIGH`]
    /// ready messages while consumers are attached (the publisher should then
    /// [`Queue::wait_for_backlog`]).
    pub fn publish_many(
        &self,
        batch: Vec<(Message, Stamp)>,
        refused: &mut Vec<(QueueError, Option<(Message, Stamp)>)>,
    ) -> bool {
        let mut state = self.lock();
        if state.deleted {
            refused.extend(
                batch
                    .into_iter()
                    .map(|returned| (QueueError::Deleted(self.name.clone()), Some(returned))),
            );
            return false;
        }
        // The whole batch is charged to `MEMORY_LIMIT` at once when it fits (one
        // update of the broker-wide charge, not one per message); near the limit,
        // message by message.
        let total = batch.iter().map(|(message, _)| charge(message)).sum();
        let precharged = self.memory.try_charge_all(total);
        for (message, stamp) in batch {
            if let Err(error) = self.publish_locked(&mut state, message, stamp, None, precharged) {
                refused.push((error, None));
            }
        }
        state.store.copy_out_waiting();
        let backlogged = !state.consumers.is_empty() && state.ready_len() > BACKLOG_HIGH;
        if backlogged {
            self.backlogged.store(true, Ordering::Release);
        }
        backlogged
    }

    /// Clears the backlog flag, waking waiting publishers, once the backlog is
    /// below [`BACKLOG_LOW`] or no consumer is left to work through it.
    pub(super) fn note_backlog(&self, state: &QueueState) {
        if self.backlogged.load(Ordering::Acquire)
            && (state.consumers.is_empty() || state.ready_len() < BACKLOG_LOW)
        {
            self.backlogged.store(false, Ordering::Release);
            self.backlog_drained.notify_waiters();
        }
    }

    /// Waits while the queue is backlogged and its consumers make progress: returns
    /// once the backlog is below [`BACKLOG_LOW`], or when it has not shrunk for
    /// `stall` (`SLOW_CONSUMER_STALL_MS`: the queue then buffers, up to its limits).
    pub async fn wait_for_backlog(&self, stall: Duration) {
        let mut last = self.depth().ready;
        loop {
            let drained = self.backlog_drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if !self.backlogged.load(Ordering::Acquire) {
                return;
            }
            if tokio::time::timeout(stall, drained).await.is_err() {
                let now = self.depth().ready;
                if now >= last {
                    return;
                }
                last = now;
            }
        }
    }

    /// Settles deliveries of a connection's consumers of this queue as done (as
    /// [`Queue::ack`]; each delivery id names its subscription) under one lock,
    /// then fills the windows they opened. Ids not outstanding go to `unknown`.
    pub fn ack_many(&self, connection_id: u64, delivery_ids: &[u64], unknown: &mut Vec<u64>) {
        let mut state = self.lock();
        let mut released = 0;
        // The consumer of the previous id (acks come in runs per consumer), and
        // every consumer that got room, in order.
        let mut last: Option<(u32, Option<usize>)> = None;
        let mut opened: Vec<usize> = Vec::new();
        for &delivery_id in delivery_ids {
            let sid = delivery_sid(delivery_id);
            let consumer = match last {
                Some((known, index)) if known == sid => index,
                _ => {
                    let index = find_consumer(&state, connection_id, sid);
                    last = Some((sid, index));
                    index
                }
            };
            let settled = consumer.and_then(|index| {
                settle_unacked(&mut state, index, delivery_id).map(|settled| (index, settled))
            });
            let Some((index, settled)) = settled else {
                unknown.push(delivery_id);
                continue;
            };
            if opened.last() != Some(&index) {
                opened.push(index);
            }
            released += settled.charge;
            if let Some(journal) = &state.journal {
                journal.mark(settled.order, Mark::Settled);
            }
        }
        if released > 0 {
            // One update of the broker-wide charge per batch, not per message.
            state.charged -= released;
            self.memory.release(released);
        }
        if state.filtered.is_some() {
            for index in opened {
                self.fill_consumer(&mut state, index);
            }
        } else if !opened.is_empty() {
            self.dispatch(&mut state);
        }
        self.note_backlog(&state);
        state.note_idleness();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBudget;
    use crate::outbound::Outbox;
    use crate::queue::QueueLimits;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn queue() -> Queue {
        Queue::new(
            "jobs".into(),
            "jobs".into(),
            QueueLimits {
                max_messages: 1 << 20,
                max_bytes: 1 << 30,
            },
            None,
            Arc::new(AtomicBool::new(false)),
            Arc::new(MemoryBudget::new(0)),
        )
    }

    fn messages(count: usize) -> Vec<(Message, Stamp)> {
        (0..count)
            .map(|_| (Message::new("jobs", "x").expect("valid"), 0))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_deep_backlog_holds_the_publisher_until_consumers_drain_it_or_stall() {
        let queue = Arc::new(queue());
        let mut refused = Vec::new();
        // No consumer: the queue buffers, nobody is held up.
        assert!(!queue.publish_many(messages(BACKLOG_HIGH + 1), &mut refused));
        let outbox = Outbox::new(
            1,
            1 << 20,
            Arc::new(crate::stats::Stats::default()),
            crate::clock::now(),
        );
        queue
            .add_consumer(1, 1, outbox.clone(), 10, None, || {})
            .expect("attached");
        assert!(
            queue.publish_many(messages(20), &mut refused),
            "backlogged with a consumer"
        );
        assert!(refused.is_empty());

        // The consumer works through it: the publisher continues below the low mark.
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.wait_for_backlog(Duration::from_secs(1)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut acked = 0;
        while queue.depth().ready >= BACKLOG_LOW {
            let ids: Vec<u64> = crate::outbound::take_frames(&outbox)
                .into_iter()
                .filter_map(|frame| match frame {
                    tern_proto::Frame::Deliver(deliver) => Some(deliver.delivery_id),
                    _ => None,
                })
                .collect();
            let mut unknown = Vec::new();
            queue.ack_many(1, &ids, &mut unknown);
            assert!(unknown.is_empty());
            acked += ids.len();
        }
        waiting.await.expect("released");
        assert!(acked > 0);

        // A stalled consumer: the publisher stops waiting after the stall period.
        assert!(queue.publish_many(messages(BACKLOG_HIGH), &mut refused));
        let started = tokio::time::Instant::now();
        queue.wait_for_backlog(Duration::from_secs(1)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "no progress for the stall period"
        );
    }
}
