//! Rebuilding a durable queue from what its store read back at startup.

use super::state::compact;
use super::{Queue, QueuedMessage};
use crate::memory::charge;
use crate::store::MessageRecord;

impl Queue {
    /// Puts the messages a store recovered back as ready, in id order, and
    /// continues ids from `next_id`. A message is flagged redelivered if it was
    /// delivered before, or when `after_crash` (the store cannot know whether it
    /// was). Recovered messages are charged to `MEMORY_LIMIT` even past it: they
    /// were confirmed, and are kept.
    pub fn restore(&self, messages: Vec<MessageRecord>, next_id: u64, after_crash: bool) {
        let mut state = self.lock();
        for record in messages {
            let charged = charge(&record.message);
            self.memory.force_charge(charged);
            state.charged += charged;
            let queued = QueuedMessage {
                redelivered: after_crash || record.attempts > 0,
                order: record.id,
                stamp: 0,
                published_ms: record.published_ms,
                attempts: record.attempts,
                message: record.message,
            };
            state.store_ready(compact(queued), false);
        }
        state.next_order = state.next_order.max(next_id);
        state.note_idleness();
    }
}
