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

use smallvec::SmallVec;

use tern_proto::filter::Filter;

use super::store::QueuedMessage;
use crate::filter_index::FilterIndex;

/// The classes a message is for: usually one, kept inline (no allocation per
/// message).
pub(super) type Classes = SmallVec<[u32; 4]>;

/// A consumer in a class: who it is, and where it is in the queue's consumer list
/// (kept up to date as consumers leave, so delivering needs no lookup).
#[derive(Debug, Clone, Copy)]
struct Member {
    id: (u64, u32),
    index: usize,
}

/// A class of consumers: those that share one filter.
#[derive(Debug)]
struct Class {
    /// Consumers in it, in the order they joined (often one per filter: kept
    /// inline).
    members: SmallVec<[Member; 1]>,
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
    /// By class id (dense: ids of dropped classes are reused).
    classes: Vec<Option<Class>>,
    free_classes: Vec<u32>,
    by_filter: HashMap<Arc<Filter>, u32>,
    index: FilterIndex<u32>,
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

    /// Consumer `id` (`(connection id, sid)`), at `index` in the queue's consumer
    /// list, joins the class of `filter` (created if new: it then scans the ready
    /// messages once). Returns the class.
    pub(super) fn join(&mut self, filter: Arc<Filter>, id: (u64, u32), index: usize) -> u32 {
        let member = Member { id, index };
        if let Some(class) = self.by_filter.get(&filter) {
            let class = *class;
            if let Some(existing) = self.class_mut(class) {
                existing.members.push(member);
            }
            return class;
        }
        let class = match self.free_classes.pop() {
            Some(class) => class,
            None => {
                self.classes.push(None);
                u32::try_from(self.classes.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let waiting = self
            .ready
            .values()
            .filter(|queued| filter.matches(queued.message.headers()))
            .map(|queued| queued.order)
            .collect();
        self.index.insert(class, filter.clone());
        self.by_filter.insert(filter, class);
        self.classes[class as usize] = Some(Class {
            members: smallvec::smallvec![member],
            cursor: 0,
            waiting,
        });
        class
    }

    fn class(&self, class: u32) -> Option<&Class> {
        self.classes.get(class as usize).and_then(Option::as_ref)
    }

    fn class_mut(&mut self, class: u32) -> Option<&mut Class> {
        self.classes
            .get_mut(class as usize)
            .and_then(Option::as_mut)
    }

    /// The consumer at `removed` in the queue's list has left it: those after it
    /// moved up by one.
    pub(super) fn consumer_removed(&mut self, removed: usize) {
        for class in self.classes.iter_mut().flatten() {
            for member in &mut class.members {
                if member.index > removed {
                    member.index -= 1;
                }
            }
        }
    }

    /// Consumer `id` leaves `class` (dropped when it was the last; its messages
    /// stay ready for the others, or for a class created later).
    pub(super) fn leave(&mut self, class: u32, id: (u64, u32)) {
        let Some(existing) = self.class_mut(class) else {
            return;
        };
        existing.members.retain(|other| other.id != id);
        if existing.members.is_empty() {
            self.classes[class as usize] = None;
            self.free_classes.push(class);
            if let Some(filter) = self.index.get(class).cloned() {
                self.by_filter.remove(&filter);
            }
            self.index.remove(class);
        }
    }

    /// The classes whose filter matches `queued`.
    pub(super) fn classes_for(&self, queued: &QueuedMessage) -> Classes {
        let mut classes = Classes::new();
        self.index.matching(&queued.message, &mut classes);
        classes
    }

    /// Whether `class` has ready messages waiting (or stale entries, which count:
    /// a new message then goes through the list, in order).
    pub(super) fn has_waiting(&self, class: u32) -> bool {
        self.class(class)
            .is_some_and(|existing| !existing.waiting.is_empty())
    }

    /// Consumers in `class`.
    pub(super) fn member_count(&self, class: u32) -> usize {
        self.class(class)
            .map_or(0, |existing| existing.members.len())
    }

    /// Where the next consumer of `class` in round-robin order is in the queue's
    /// consumer list (the position moves past it).
    pub(super) fn next_member(&mut self, class: u32) -> Option<usize> {
        let existing = self.class_mut(class)?;
        if existing.members.is_empty() {
            return None;
        }
        let position = existing.cursor % existing.members.len();
        existing.cursor = position + 1;
        Some(existing.members[position].index)
    }

    /// Stores a ready message for `classes` (those its filter matches), in order:
    /// a new one at the back, a requeued one at its original place.
    pub(super) fn insert(&mut self, queued: QueuedMessage, classes: &[u32]) {
        let order = queued.order;
        for class in classes {
            if let Some(existing) = self.class_mut(*class) {
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
        let existing = self.classes.get_mut(class as usize)?.as_mut()?;
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
        for class in self.classes.iter_mut().flatten() {
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
