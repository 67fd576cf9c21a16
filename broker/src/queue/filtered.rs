//! The ready messages of a queue once a consumer with a header filter has joined
//! it: no message waits behind one that its consumers cannot take (no head-of-line
//! blocking), and none is scanned for again and again.
//!
//! Consumers are grouped into *classes*, one per distinct filter (consumers without
//! a filter form the class of the empty filter, which matches everything). Ready
//! messages are kept by publish order; each class keeps, oldest first, the orders
//! of the ready messages its filter matches, found by a [`FilterIndex`] when the
//! message arrives (or comes back). A consumer with room takes the oldest entry of
//! its class that is still ready; a message taken through one class leaves stale
//! entries in the others, which are skipped and compacted away. A message that
//! matches no class waits in the ready map; a class created later scans the ready
//! messages once, when it is created.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tern_proto::filter::Filter;

use super::store::QueuedMessage;
use crate::filter_index::FilterIndex;

/// A class of consumers: those that share one filter.
#[derive(Debug)]
struct Class {
    /// Consumers in it, as `(connection id, sid)`, in the order they joined.
    members: Vec<(u64, u32)>,
    /// Round-robin position among `members`.
    cursor: usize,
    /// Orders of ready messages this filter matches, oldest first (some may have
    /// been taken through another class since).
    waiting: VecDeque<u64>,
}

/// Ready messages indexed for filtered consumers.
#[derive(Debug, Default)]
pub(super) struct FilteredReady {
    ready: BTreeMap<u64, QueuedMessage>,
    bytes: u64,
    classes: FxHashMap<u32, Class>,
    by_filter: HashMap<Arc<Filter>, u32>,
    index: FilterIndex<u32>,
    next_class: u32,
}

impl FilteredReady {
    /// Takes every message of `messages` (oldest first) as ready.
    pub(super) fn new(messages: impl IntoIterator<Item = QueuedMessage>) -> Self {
        let mut ready = FilteredReady::default();
        for queued in messages {
            ready.bytes += queued.size();
            ready.ready.insert(queued.order, queued);
        }
        ready
    }

    /// Ready messages.
    pub(super) fn len(&self) -> usize {
        self.ready.len()
    }

    /// Their payload bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether none is ready.
    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Consumer `member` joins the class of `filter` (created if new: it then scans
    /// the ready messages once). Returns the class.
    pub(super) fn join(&mut self, filter: Arc<Filter>, member: (u64, u32)) -> u32 {
        if let Some(class) = self.by_filter.get(&filter) {
            let class = *class;
            if let Some(existing) = self.classes.get_mut(&class) {
                existing.members.push(member);
            }
            return class;
        }
        let class = self.next_class;
        self.next_class = self.next_class.wrapping_add(1);
        let waiting = self
            .ready
            .values()
            .filter(|queued| filter.matches(queued.message.headers()))
            .map(|queued| queued.order)
            .collect();
        self.index.insert(class, filter.clone());
        self.by_filter.insert(filter, class);
        self.classes.insert(
            class,
            Class {
                members: vec![member],
                cursor: 0,
                waiting,
            },
        );
        class
    }

    /// Consumer `member` leaves `class` (dropped when it was the last; its
    /// messages stay ready for the others, or for a class created later).
    pub(super) fn leave(&mut self, class: u32, member: (u64, u32)) {
        let Some(existing) = self.classes.get_mut(&class) else {
            return;
        };
        existing.members.retain(|other| *other != member);
        if existing.members.is_empty() {
            self.classes.remove(&class);
            if let Some(filter) = self.index.get(class).cloned() {
                self.by_filter.remove(&filter);
            }
            self.index.remove(class);
        }
    }

    /// The classes whose filter matches `queued`.
    pub(super) fn classes_for(&self, queued: &QueuedMessage) -> Vec<u32> {
        let mut classes = Vec::new();
        self.index.matching(&queued.message, &mut classes);
        classes
    }

    /// Consumers in `class`.
    pub(super) fn member_count(&self, class: u32) -> usize {
        self.classes
            .get(&class)
            .map_or(0, |existing| existing.members.len())
    }

    /// The next consumer of `class` in round-robin order (the position moves past
    /// it).
    pub(super) fn next_member(&mut self, class: u32) -> Option<(u64, u32)> {
        let existing = self.classes.get_mut(&class)?;
        if existing.members.is_empty() {
            return None;
        }
        let position = existing.cursor % existing.members.len();
        existing.cursor = position + 1;
        Some(existing.members[position])
    }

    /// Stores a ready message for `classes` (those its filter matches), in order:
    /// a new one at the back, a requeued one at its original place.
    pub(super) fn insert(&mut self, queued: QueuedMessage, classes: &[u32]) {
        let order = queued.order;
        for class in classes {
            if let Some(existing) = self.classes.get_mut(class) {
                match existing.waiting.back() {
                    Some(last) if *last > order => {
                        let at = existing.waiting.partition_point(|other| *other < order);
                        existing.waiting.insert(at, order);
                    }
                    _ => existing.waiting.push_back(order),
                }
            }
        }
        self.bytes += queued.size();
        self.ready.insert(order, queued);
    }

    /// The oldest ready message `class` matches, taken out.
    pub(super) fn take_for(&mut self, class: u32) -> Option<QueuedMessage> {
        let existing = self.classes.get_mut(&class)?;
        while let Some(order) = existing.waiting.pop_front() {
            if let Some(queued) = self.ready.remove(&order) {
                self.bytes -= queued.size();
                compact(existing, &self.ready);
                return Some(queued);
            }
        }
        None
    }

    /// Every ready message, taken out (purge, delete).
    pub(super) fn drain(&mut self) -> Vec<QueuedMessage> {
        for class in self.classes.values_mut() {
            class.waiting.clear();
        }
        self.bytes = 0;
        std::mem::take(&mut self.ready).into_values().collect()
    }
}

/// Drops the stale entries of a class whose list has grown well past the number of
/// ready messages (they were taken through other classes), so it stays bounded.
fn compact(class: &mut Class, ready: &BTreeMap<u64, QueuedMessage>) {
    if class.waiting.len() > 2 * ready.len() + 64 {
        class.waiting.retain(|order| ready.contains_key(order));
    }
}
