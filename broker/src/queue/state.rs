//! A queue's state behind its lock: ready messages (a FIFO store, or indexed by
//! filter once a filtered consumer joins), consumers and their unacked deliveries,
//! and the steps every operation is built from.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::filtered::{Classes, FilteredReady};
use super::unacked::Unacked;
use super::{delivery_sid, MemoryStore, QueueError, QueuedMessage};
use crate::clock::{self, Instant};
use crate::memory::charge;
use crate::outbound::Outbox;
use crate::store::{Mark, QueueJournal};

#[derive(Debug)]
pub(super) struct QueueState {
    pub(super) store: MemoryStore,
    /// Where changes go to survive a restart (`None`: `STORE_URL=mem://`).
    pub(super) journal: Option<Arc<dyn QueueJournal>>,
    pub(super) consumers: Vec<Consumer>,
    pub(super) cursor: usize,
    pub(super) unacked_messages: usize,
    pub(super) unacked_bytes: u64,
    pub(super) next_order: u64,
    /// Since when the queue has been empty with no consumer (`None`: it is not).
    pub(super) idle_since: Option<Instant>,
    /// Deleted: refuses publishes and consumers from now on.
    pub(super) deleted: bool,
    /// What this queue's messages are charged against `MEMORY_LIMIT` in all.
    pub(super) charged: u64,
    /// Set once a consumer with a header filter joins: from then on the ready
    /// messages live here, indexed by filter, instead of in `store` (which stays
    /// empty); see `filtered.rs`.
    pub(super) filtered: Option<Box<FilteredReady>>,
    /// Each consumer's index in `consumers`, by `(connection id, sid)`.
    pub(super) positions: FxHashMap<(u64, u32), usize>,
}

impl QueueState {
    pub(super) fn ready_len(&self) -> usize {
        self.filtered
            .as_ref()
            .map_or_else(|| self.store.len(), |ready| ready.len())
    }

    pub(super) fn ready_bytes(&self) -> u64 {
        self.filtered
            .as_ref()
            .map_or_else(|| self.store.bytes(), |ready| ready.bytes())
    }

    pub(super) fn ready_is_empty(&self) -> bool {
        self.filtered
            .as_ref()
            .map_or_else(|| self.store.is_empty(), |ready| ready.is_empty())
    }

    /// Puts a message back among the ready ones, at its original place (requeue),
    /// or at the back (new). Returns the filter classes it is for (filtered mode).
    pub(super) fn store_ready(&mut self, queued: QueuedMessage, requeued: bool) -> Classes {
        match &mut self.filtered {
            Some(ready) => {
                let classes = ready.classes_for(&queued);
                ready.insert(queued, &classes);
                classes
            }
            None if requeued => {
                self.store.push_front(queued);
                Classes::new()
            }
            None => {
                self.store.push_back(queued);
                Classes::new()
            }
        }
    }

    /// Every ready message, taken out (to be dropped).
    pub(super) fn take_ready(&mut self) -> Vec<QueuedMessage> {
        if let Some(ready) = &mut self.filtered {
            return ready.drain();
        }
        self.store.take_all()
    }

    pub(super) fn rebuild_positions(&mut self) {
        self.positions = self
            .consumers
            .iter()
            .enumerate()
            .map(|(index, consumer)| ((consumer.connection_id, consumer.sid), index))
            .collect();
    }

    /// Keeps `idle_since` up to date after a change: set when the queue has just
    /// become empty and consumerless, cleared when it is not (no clock read then).
    pub(super) fn note_idleness(&mut self) {
        let idle = self.consumers.is_empty() && self.unacked_messages == 0 && self.ready_is_empty();
        match (idle, self.idle_since) {
            (true, None) => self.idle_since = Some(clock::now()),
            (false, Some(_)) => self.idle_since = None,
            _ => {}
        }
    }
}

#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) connection_id: u64,
    pub(super) sid: u32,
    pub(super) outbox: Arc<Outbox>,
    pub(super) prefetch: u32,
    pub(super) unacked: Unacked,
    /// Its filter class, once the queue is in filtered mode.
    pub(super) class: Option<u32>,
}

impl Consumer {
    pub(super) fn has_room(&self) -> bool {
        self.unacked.len() < self.prefetch as usize
    }

    /// The delivery id of a counter of this consumer's (never 0: 0 marks
    /// broadcast).
    pub(super) fn delivery_id(&self, counter: u32) -> u64 {
        (u64::from(self.sid) << 32) | u64::from(counter)
    }
}

/// Gives a message that may wait a while its own allocation, instead of a view
/// that pins the publisher's whole read buffer.
pub(super) fn compact(mut queued: QueuedMessage) -> QueuedMessage {
    queued.message = queued.message.compacted();
    queued
}

pub(super) fn find_consumer(state: &QueueState, connection_id: u64, sid: u32) -> Option<usize> {
    state.positions.get(&(connection_id, sid)).copied()
}

pub(super) fn next_consumer_with_room(state: &mut QueueState) -> Option<usize> {
    let count = state.consumers.len();
    for step in 0..count {
        let index = (state.cursor + step) % count;
        if state.consumers[index].has_room() {
            state.cursor = index + 1;
            return Some(index);
        }
    }
    None
}

/// Sends one message to one consumer and records it as unacked. When the consumer's
/// connection is already gone, returns the message and closes that consumer's window
/// (its session is about to detach it and requeue what it held).
pub(super) fn deliver(
    state: &mut QueueState,
    index: usize,
    queued: QueuedMessage,
) -> Result<(), QueuedMessage> {
    let consumer = &mut state.consumers[index];
    let counter = consumer.unacked.next_counter();
    let delivery_id = consumer.delivery_id(counter);
    match consumer.outbox.push_queued(
        consumer.sid,
        delivery_id,
        queued.redelivered,
        &queued.message,
        queued.stamp,
    ) {
        Ok(()) => {
            let size = queued.size();
            if let Some(journal) = &state.journal {
                journal.mark(queued.order, Mark::Delivered);
            }
            let mut queued = queued;
            queued.attempts += 1;
            consumer.unacked.push(queued);
            state.unacked_messages += 1;
            state.unacked_bytes += size;
            Ok(())
        }
        Err(_) => {
            consumer.prefetch = 0;
            Err(queued)
        }
    }
}

/// What an acked delivery leaves to account for once its message is dropped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    /// Its id in the queue's publish order (for the journal).
    pub(super) order: u64,
    /// Its payload bytes (`QUEUE_MAX_BYTES`).
    pub(super) size: u64,
    /// What it was charged against `MEMORY_LIMIT`.
    pub(super) charge: u64,
}

/// Settles an unacked delivery of consumer `index` as done: drops its message
/// where it lies and returns what it held (`None`: not outstanding).
pub(super) fn settle_unacked(
    state: &mut QueueState,
    index: usize,
    delivery_id: u64,
) -> Option<Settled> {
    let settled = state.consumers[index]
        .unacked
        .settle(delivery_id as u32, |queued| Settled {
            order: queued.order,
            size: queued.size(),
            charge: charge(&queued.message),
        })?;
    state.unacked_messages -= 1;
    state.unacked_bytes -= settled.size;
    Some(settled)
}

pub(super) fn take_unacked(
    state: &mut QueueState,
    connection_id: u64,
    sid: u32,
    delivery_id: u64,
) -> Result<(usize, QueuedMessage), QueueError> {
    if delivery_sid(delivery_id) != sid {
        return Err(QueueError::UnknownDelivery(delivery_id));
    }
    let index =
        find_consumer(state, connection_id, sid).ok_or(QueueError::UnknownDelivery(delivery_id))?;
    let queued = state.consumers[index]
        .unacked
        .take(delivery_id as u32)
        .ok_or(QueueError::UnknownDelivery(delivery_id))?;
    state.unacked_messages -= 1;
    state.unacked_bytes -= queued.size();
    Ok((index, queued))
}
