//! Operator actions and upkeep on one queue: purge, delete, expiry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Queue, QueueError};
use crate::clock::Instant;
use crate::outbound::Outbox;

/// What deleting a queue removed.
#[derive(Debug)]
pub struct Closed {
    /// Messages deleted with it (ready and unacked).
    pub messages: usize,
    /// The consumers it had, `(outbox, sid)`: each is told its subscription ended.
    pub consumers: Vec<(Arc<Outbox>, u32)>,
}

impl Queue {
    /// Removes every ready message; unacked deliveries stay with their consumers.
    /// Returns how many were removed.
    pub fn purge(&self) -> usize {
        let mut state = self.lock();
        let taken = state.take_ready();
        for queued in &taken {
            self.settled(&mut state, queued);
        }
        self.note_backlog(&state);
        state.note_idleness();
        taken.len()
    }

    /// Deletes the queue: from now on it refuses publishes and consumers, and
    /// everything it held is dropped. Refused while consumers are attached unless
    /// `force`, in which case they are detached and returned (their unacked
    /// deliveries are dropped too: a late ACK gets `UNKNOWN_DELIVERY`).
    pub fn close(&self, force: bool) -> Result<Closed, QueueError> {
        let mut state = self.lock();
        if state.deleted {
            return Err(QueueError::Deleted(self.name.clone()));
        }
        if !force && !state.consumers.is_empty() {
            return Err(QueueError::InUse {
                name: self.name.clone(),
                consumers: state.consumers.len(),
            });
        }
        state.deleted = true;
        if let Some(journal) = &state.journal {
            journal.delete();
        }
        let messages = state.ready_len() + state.unacked_messages;
        state.take_ready();
        state.positions.clear();
        let consumers = std::mem::take(&mut state.consumers)
            .into_iter()
            .map(|consumer| (consumer.outbox, consumer.sid))
            .collect();
        state.unacked_messages = 0;
        state.unacked_bytes = 0;
        self.memory.release(std::mem::take(&mut state.charged));
        self.consumer_count.store(0, Ordering::Release);
        self.note_backlog(&state);
        Ok(Closed {
            messages,
            consumers,
        })
    }

    /// Deletes the queue if it has been empty with no consumer for at least
    /// `after` (`QUEUE_EXPIRE_SECS`) by `now`. Returns whether it did.
    pub fn expire_if_idle(&self, now: Instant, after: std::time::Duration) -> bool {
        let mut state = self.lock();
        let expired = !state.deleted
            && state
                .idle_since
                .is_some_and(|since| now.saturating_duration_since(since) >= after);
        if expired {
            state.deleted = true;
            if let Some(journal) = &state.journal {
                journal.delete();
            }
        }
        expired
    }
}
