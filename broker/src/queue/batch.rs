//! Batches: a read batch's publishes to one queue, or acks of one consumer, under
//! one lock and one dispatch — so a queue's lock is taken per batch, not per
//! message, by publishers and consumers alike.

use std::sync::Arc;

use super::state::take_unacked;
use super::{Queue, QueueError};
use crate::clock::Stamp;
use crate::store::Mark;
use tern_proto::Message;

impl Queue {
    /// Publishes each message of `batch` in order (as [`Queue::publish`] without a
    /// confirm) under one lock; the refusals go to `refused`, with their message.
    pub fn publish_many(
        &self,
        batch: impl IntoIterator<Item = (Arc<Message>, Stamp)>,
        refused: &mut Vec<(Arc<Message>, Stamp, QueueError)>,
    ) {
        let mut state = self.lock();
        for (message, stamp) in batch {
            if let Err(error) = self.publish_locked(&mut state, message.clone(), stamp, None) {
                refused.push((message, stamp, error));
            }
        }
    }

    /// Settles deliveries of one consumer as done (as [`Queue::ack`]) under one
    /// lock, then fills its window once. Ids not outstanding go to `unknown`.
    pub fn ack_many(&self, connection_id: u64, sid: u32, delivery_ids: &[u64], unknown: &mut Vec<u64>) {
        let mut state = self.lock();
        let mut consumer = None;
        for &delivery_id in delivery_ids {
            match take_unacked(&mut state, connection_id, sid, delivery_id) {
                Ok((index, queued)) => {
                    self.uncharge(&mut state, &queued.message);
                    if let Some(journal) = &state.journal {
                        journal.mark(queued.order, Mark::Settled);
                    }
                    consumer = Some(index);
                }
                Err(_) => unknown.push(delivery_id),
            }
        }
        if let Some(index) = consumer {
            self.dispatch_to(&mut state, index);
        }
        state.note_idleness();
    }
}
