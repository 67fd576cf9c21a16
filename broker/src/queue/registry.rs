//! The broker's queues by name, each bound to the pattern it was created with.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;

use super::{Closed, MemoryStore, Queue, QueueError, QueueLimits};
use crate::clock::Instant;
use crate::memory::MemoryBudget;

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
}

impl QueueRegistry {
    /// An empty registry creating queues with these limits, charging their
    /// messages to `memory`.
    pub fn new(
        max_queues: usize,
        limits: QueueLimits,
        draining: Arc<AtomicBool>,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        QueueRegistry {
            queues: Mutex::new(HashMap::new()),
            max_queues,
            limits,
            draining,
            memory,
        }
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
        let queue = Arc::new(Queue::new(
            name.into(),
            pattern.into(),
            self.limits,
            Box::<MemoryStore>::default(),
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
