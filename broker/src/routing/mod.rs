//! Routing: which broadcast subscriptions and queues a published subject reaches.
//!
//! - [`index`] — the token trie of subscription patterns (`*`, `>`).
//! - [`fan_out`](mod@fan_out) — broadcast delivery of one message to every matching subscription.
//! - [`filtered`] — filtered broadcast subscriptions, one indexed group per pattern.
//! - this module — [`Router`]: the index behind one lock, with a generation number
//!   that sessions' route caches compare, so the steady-state publish path takes no
//!   lock (see `session/route_cache.rs`).

pub mod fan_out;
pub mod filtered;
pub mod index;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytestring::ByteString;
use tern_proto::filter::Filter;

pub use fan_out::{fan_out, BroadcastTarget, Deferred, QueueBatch, Touched};
pub use filtered::FilteredGroup;
pub use index::{pattern_matches, SubjectIndex};

use crate::queue::Queue;

/// Something a subject can route to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Route {
    /// A broadcast subscription.
    Subscriber(BroadcastTarget),
    /// A queue (bound once, whatever its number of consumers).
    Queue(Arc<Queue>),
    /// Every filtered broadcast subscription of one pattern.
    Filtered(Arc<FilteredGroup>),
}

/// Everything one subject routes to, split by delivery path.
#[derive(Debug, Default)]
pub struct Routes {
    /// Broadcast subscriptions: each gets a copy.
    pub subscribers: Vec<BroadcastTarget>,
    /// Queues: each stores the message for one of its consumers.
    pub queues: Vec<Arc<Queue>>,
    /// Groups of filtered broadcast subscriptions: each picks those whose filter
    /// matches a message's headers.
    pub filtered: Vec<Arc<FilteredGroup>>,
}

impl Routes {
    /// True when nothing matches.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.queues.is_empty() && self.filtered.is_empty()
    }
}

/// The subject index of every subscription and queue binding, and its generation.
#[derive(Debug)]
pub struct Router {
    index: RwLock<SubjectIndex<Route>>,
    generation: AtomicU64,
    /// The filtered group of each pattern that has one. Lock order: this, then the
    /// index.
    groups: Mutex<HashMap<ByteString, Arc<FilteredGroup>>>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            index: RwLock::new(SubjectIndex::new()),
            generation: AtomicU64::new(1),
            groups: Mutex::new(HashMap::new()),
        }
    }
}

impl Router {
    /// Changes whenever the index changes; route caches compare it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Computes what `subject` routes to (takes the index's read lock).
    pub fn routes_for(&self, subject: &str) -> Routes {
        let mut routes = Routes::default();
        let index = self
            .index
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        index.for_each_match(subject, |route| match route {
            Route::Subscriber(target) => routes.subscribers.push(target.clone()),
            Route::Queue(queue) => routes.queues.push(queue.clone()),
            Route::Filtered(group) => routes.filtered.push(group.clone()),
        });
        routes
    }

    fn modify(&self, change: impl FnOnce(&mut SubjectIndex<Route>)) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        change(&mut index);
        // Bumped under the write lock: a cache that sees the old value cannot have
        // read the new index state under it.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumps the generation without a change: every session's route cache (and the
    /// permission decisions cached with it) starts over.
    pub fn invalidate(&self) {
        self.modify(|_| {});
    }

    /// Makes a broadcast subscription routable.
    pub fn add_subscriber(&self, pattern: &str, target: BroadcastTarget) {
        self.modify(|index| index.insert(pattern, Route::Subscriber(target)));
    }

    /// Removes a broadcast subscription from routing.
    pub fn remove_subscriber(&self, pattern: &str, connection_id: u64, sid: u32) {
        self.modify(|index| {
            index.remove(
                pattern,
                |route| matches!(route, Route::Subscriber(target) if target.is(connection_id, sid)),
            );
        });
    }

    /// Makes a filtered broadcast subscription routable: it joins its pattern's
    /// group (created, and put in the index, for the pattern's first one).
    pub fn add_filtered_subscriber(
        &self,
        pattern: &str,
        target: BroadcastTarget,
        filter: Arc<Filter>,
    ) {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(group) = groups.get(pattern) {
            group.add(target, filter);
            return;
        }
        let group = Arc::new(FilteredGroup::default());
        group.add(target, filter);
        groups.insert(pattern.into(), group.clone());
        self.modify(|index| index.insert(pattern, Route::Filtered(group)));
    }

    /// Removes a filtered broadcast subscription (and its pattern's group from the
    /// index once it is the last).
    pub fn remove_filtered_subscriber(&self, pattern: &str, connection_id: u64, sid: u32) {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(group) = groups.get(pattern).cloned() else {
            return;
        };
        if group.remove(connection_id, sid) {
            groups.remove(pattern);
            self.modify(|index| {
                index.remove(
                    pattern,
                    |route| matches!(route, Route::Filtered(routed) if Arc::ptr_eq(routed, &group)),
                );
            });
        }
    }

    /// Makes a queue routable under its binding pattern.
    pub fn add_queue(&self, pattern: &str, queue: Arc<Queue>) {
        self.modify(|index| index.insert(pattern, Route::Queue(queue)));
    }

    /// Stops routing to a deleted queue.
    pub fn remove_queue(&self, queue: &Arc<Queue>) {
        self.modify(|index| {
            index.remove(
                queue.pattern(),
                |route| matches!(route, Route::Queue(routed) if Arc::ptr_eq(routed, queue)),
            );
        });
    }
}
