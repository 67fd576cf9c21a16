//! Broadcast subscriptions with header filters, grouped by pattern.
//!
//! One [`FilteredGroup`] per subscription pattern sits in the subject index as a
//! single route, so a subject's routes do not grow with the number of filtered
//! subscriptions; inside it a [`FilterIndex`] finds the subscriptions whose filter
//! matches a message without evaluating every filter.

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;
use tern_proto::filter::Filter;
use tern_proto::Message;

use super::fan_out::BroadcastTarget;
use crate::filter_index::FilterIndex;

#[derive(Debug, Default)]
struct Members {
    /// By a key that is never reused while the group lives.
    targets: FxHashMap<u64, BroadcastTarget>,
    filters: FilterIndex<u64>,
    next_key: u64,
}

/// The filtered broadcast subscriptions of one pattern.
#[derive(Debug, Default)]
pub struct FilteredGroup {
    members: RwLock<Members>,
}

impl FilteredGroup {
    /// Adds a subscription with its filter.
    pub fn add(&self, target: BroadcastTarget, filter: Arc<Filter>) {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = members.next_key;
        members.next_key += 1;
        members.targets.insert(key, target);
        members.filters.insert(key, filter);
    }

    /// Removes subscription `sid` of connection `connection_id`; returns whether the
    /// group is now empty.
    pub fn remove(&self, connection_id: u64, sid: u32) -> bool {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = members
            .targets
            .iter()
            .find(|(_, target)| target.is(connection_id, sid))
            .map(|(key, _)| *key);
        if let Some(key) = key {
            members.targets.remove(&key);
            members.filters.remove(key);
        }
        members.targets.is_empty()
    }

    /// Appends to `matched` every subscription whose filter matches `message`.
    pub fn matching(&self, message: &Message, matched: &mut Vec<BroadcastTarget>) {
        let members = self
            .members
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut keys = Vec::new();
        members.filters.matching(message, &mut keys);
        matched.extend(
            keys.iter()
                .filter_map(|key| members.targets.get(key).cloned()),
        );
    }
}
