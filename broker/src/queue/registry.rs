//! The broker's queues by name, each bound to the pattern it was created with.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;

use super::{Closed, Queue, QueueError, QueueLimits};
use crate::clock::Instant;
use crate::memory::MemoryBudget;
use crate::store::{RecoveredQueue, Store};

/// Why a queue could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The queue exists with another binding.
    #[error("queue `{name}` is bound to `{bound}`, not `{requested}`")]
    PatternMismatch {
        /// The queue.
        name: ByteString,
        /// Its binding.
        bound: ByteString,
        /// What was asked for.
        requested: ByteString,
    },
    /// `MAX_QUEUES` reached.
    #[error("queue limit of {max} (MAX_QUEUES) reached")]
    TooManyQueues {
        /// The limit.
        max: usize,
    },
    /// No queue has this name.
    #[error("no queue named `{0}`")]
    UnknownQueue(ByteString),
    /// The store could not create the queue.
    #[error("queue `{name}` could not be created in the store: {reason}")]
    Store {
        /// The queue.
        name: ByteString,
        /// Why.
        reason: String,
    },
    /// A delete without force of a queue with consumers.
    #[error(
        "queue `{name}` has {consumers} consumer(s) attached; delete it with force to detach them"
    )]
    InUse {
        /// The queue.
        name: ByteString,
        /// Consumers attached.
        consumers: usize,
    },
}

/// All queues, by name.
#[derive(Debug)]
pub struct QueueRegistry {
    queues: Mutex<HashMap<ByteString, Arc<Queue>>>,
    max_queues: usize,
    limits: QueueLimits,
    draining: Arc<AtomicBool>,
    memory: Arc<MemoryBudget>,
    /// Where new queues are made durable (`None`: in memory only).
    store: Option<Arc<dyn Store>>,
}

impl QueueRegistry {
    /// An empty registry creating queues with these limits, charging their
    /// messages to `memory`.
    pub fn new(
        max_queues: usize,
        limits: QueueLimits,
        draining: Arc<AtomicBool>,
        memory: Arc<MemoryBudget>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        QueueRegistry {
            queues: Mutex::new(HashMap::new()),
            max_queues,
            limits,
            draining,
            memory,
            store,
        }
    }

    /// Adds the queues a store read back at startup, with their messages; returns
    /// them (to be made routable). `after_crash` flags every message redelivered.
    pub fn restore(&self, recovered: Vec<RecoveredQueue>, after_crash: bool) -> Vec<Arc<Queue>> {
        let mut queues = self.lock();
        let mut restored = Vec::with_capacity(recovered.len());
        for queue in recovered {
            let restored_queue = Arc::new(Queue::new(
                queue.name.as_str().into(),
                queue.pattern.as_str().into(),
                self.limits,
                Some(queue.journal),
                self.draining.clone(),
                self.memory.clone(),
            ));
            restored_queue.restore(queue.messages, queue.next_id, after_crash);
            queues.insert(queue.name.into(), restored_queue.clone());
            restored.push(restored_queue);
        }
        restored
    }

    /// Finds the queue `name`, checking its binding, or creates it bound to `pattern`.
    /// `on_create` runs under the registry lock, so a new queue becomes routable
    /// exactly once. Returns the queue and whether it was created.
    pub fn bind(
        &self,
        name: &str,
        pattern: &str,
        on_create: impl FnOnce(&Arc<Queue>),
    ) -> Result<(Arc<Queue>, bool), RegistryError> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(queue) = queues.get(name) {
            if queue.pattern() != pattern {
                return Err(RegistryError::PatternMismatch {
                    name: queue.name().clone(),
                    bound: queue.pattern().clone(),
                    requested: pattern.into(),
                });
            }
            return Ok((queue.clone(), false));
        }
        if queues.len() >= self.max_queues {
            return Err(RegistryError::TooManyQueues {
                max: self.max_queues,
            });
        }
        let journal =
            match &self.store {
                Some(store) => Some(store.create_queue(name, pattern).map_err(|error| {
                    RegistryError::Store {
                        name: name.into(),
                        reason: error.to_string(),
                    }
                })?),
                None => None,
            };
        let queue = Arc::new(Queue::new(
            name.into(),
            pattern.into(),
            self.limits,
            journal,
            self.draining.clone(),
            self.memory.clone(),
        ));
        on_create(&queue);
        queues.insert(name.into(), queue.clone());
        Ok((queue, true))
    }

    /// Deletes queue `name` (see [`Queue::close`]). `on_remove` runs under the
    /// registry lock, so the queue stops being routable before its name can be
    /// bound again.
    pub fn delete(
        &self,
        name: &str,
        force: bool,
        on_remove: impl FnOnce(&Arc<Queue>),
    ) -> Result<Closed, RegistryError> {
        let mut queues = self.lock();
        let queue = queues
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownQueue(name.into()))?;
        let closed = queue.close(force).map_err(|error| match error {
            QueueError::InUse { name, consumers } => RegistryError::InUse { name, consumers },
            _ => RegistryError::UnknownQueue(name.into()),
        })?;
        queues.remove(name);
        on_remove(&queue);
        Ok(closed)
    }

    /// Deletes every queue that has been empty with no consumer for `after` by
    /// `now`; `on_remove` runs for each under the registry lock. Returns them.
    pub fn expire(
        &self,
        now: Instant,
        after: std::time::Duration,
        mut on_remove: impl FnMut(&Arc<Queue>),
    ) -> Vec<Arc<Queue>> {
        let mut queues = self.lock();
        let expired: Vec<Arc<Queue>> = queues
            .values()
            .filter(|queue| queue.expire_if_idle(now, after))
            .cloned()
            .collect();
        for queue in &expired {
            queues.remove(queue.name().as_ref() as &str);
            on_remove(queue);
        }
        expired
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ByteString, Arc<Queue>>> {
        self.queues
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The queue named `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(name)
            .cloned()
    }

    /// Number of queues.
    pub fn len(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }

    /// True when no queue exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every queue, for reports.
    pub fn all(&self) -> Vec<Arc<Queue>> {
        self.queues
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
