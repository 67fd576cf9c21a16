//! How a queue keeps its ready messages in memory (FIFO order). Durable storage is
//! not here: a queue with a store also hands every change to its journal
//! ([`crate::store::QueueJournal`]), and is rebuilt from it at startup.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::clock::Stamp;
use tern_proto::Message;

/// A message waiting in a queue (or held unacked by a consumer).
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The message.
    pub message: Arc<Message>,
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

/// FIFO storage of a queue's ready messages. Limits are enforced by the queue, not
/// the store; unacked messages are tracked by the queue, not the store.
pub trait QueueStore: Send + fmt::Debug {
    /// Appends a newly published message.
    fn push_back(&mut self, message: QueuedMessage) -> Result<(), StoreError>;
    /// Puts a message back at the front (requeue after nack or consumer loss).
    fn push_front(&mut self, message: QueuedMessage) -> Result<(), StoreError>;
    /// Takes the oldest message.
    fn pop_front(&mut self) -> Result<Option<QueuedMessage>, StoreError>;
    /// Number of ready messages.
    fn len(&self) -> usize;
    /// Payload bytes of the ready messages.
    fn bytes(&self) -> u64;
    /// True when no message is ready.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-memory store: a `VecDeque`. Everything in it is lost when the process exits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    messages: VecDeque<QueuedMessage>,
    bytes: u64,
}

impl QueueStore for MemoryStore {
    fn push_back(&mut self, message: QueuedMessage) -> Result<(), StoreError> {
        self.bytes += message.size();
        self.messages.push_back(message);
        Ok(())
    }

    fn push_front(&mut self, message: QueuedMessage) -> Result<(), StoreError> {
        self.bytes += message.size();
        self.messages.push_front(message);
        Ok(())
    }

    fn pop_front(&mut self) -> Result<Option<QueuedMessage>, StoreError> {
        let message = self.messages.pop_front();
        if let Some(message) = &message {
            self.bytes -= message.size();
        }
        if self.messages.is_empty() && self.messages.capacity() > 1024 {
            // A drained burst should not pin its peak memory.
            self.messages = VecDeque::new();
        }
        Ok(message)
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}
