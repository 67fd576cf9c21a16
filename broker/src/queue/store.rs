//! How a queue keeps its ready messages in memory (FIFO order). Durable storage is
//! not here: a queue with a store also hands every change to its journal
//! ([`crate::store::QueueJournal`]), and is rebuilt from it at startup.

use std::collections::VecDeque;

use crate::clock::Stamp;
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

/// A queue's ready messages, oldest first, with their payload bytes. Limits are
/// enforced by the queue, not here; unacked messages are tracked by the queue's
/// consumers. Everything in it is lost when the process exits (a durable queue's
/// journal keeps the rest).
#[derive(Debug, Default)]
pub struct MemoryStore {
    messages: VecDeque<QueuedMessage>,
    bytes: u64,
}

impl MemoryStore {
    /// Appends a newly published message.
    pub fn push_back(&mut self, message: QueuedMessage) {
        self.bytes += message.size();
        self.messages.push_back(message);
    }

    /// Puts a message back at the front (requeue after nack or consumer loss).
    pub fn push_front(&mut self, message: QueuedMessage) {
        self.bytes += message.size();
        self.messages.push_front(message);
    }

    /// Takes the oldest message.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let message = self.messages.pop_front();
        if let Some(message) = &message {
            self.bytes -= message.size();
        }
        if self.messages.is_empty() && self.messages.capacity() > 1024 {
            // A drained burst should not pin its peak memory.
            self.messages = VecDeque::new();
        }
        message
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
