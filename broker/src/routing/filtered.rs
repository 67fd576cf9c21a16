//! Broadcast subscriptions with header filters, grouped by pattern.
//!
//! One [`FilteredGroup`] per subscription pattern sits in the subject index as a
//! single route, so a subject's routes do not grow with the number of filtered
//! subscriptions; inside it a [`FilterIndex`] finds the subscriptions whose filter
//! matches a message without evaluating every filter.

use std::sync::{Arc, RwLock};

use smallvec::SmallVec;
use tern_proto::filter::Filter;
use tern_proto::Message;

use super::fan_out::BroadcastTarget;
use crate::filter_index::FilterIndex;

#[derive(Debug, Default)]
struct Members {
    /// By slot (dense, so a match finds its target without a hash lookup; the
    /// slot of a removed subscription is reused, its filter gone with it).
    targets: Vec<Option<BroadcastTarget>>,
    free: Vec<u32>,
    filters: FilterIndex<u32>,
    count: usize,
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
        let slot = match members.free.pop() {
            Some(slot) => slot,
            None => {
                members.targets.push(None);
                u32::try_from(members.targets.len() - 1).unwrap_or(u32::MAX)
            }
        };
        members.targets[slot as usize] = Some(target);
        members.filters.insert(slot, filter);
        members.count += 1;
    }

    /// Removes subscription `sid` of connection `connection_id`; returns whether the
    /// group is now empty.
    pub fn remove(&self, connection_id: u64, sid: u32) -> bool {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = members.targets.iter().position(|target| {
            target
                .as_ref()
                .is_some_and(|target| target.is(connection_id, sid))
        });
        if let Some(slot) = slot {
            members.targets[slot] = None;
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            members.filters.remove(slot);
            members.free.push(slot);
            members.count -= 1;
        }
        members.count == 0
    }

    /// Appends to `matched` every subscription whose filter matches `message`.
    pub fn matching(&self, message: &Message, matched: &mut impl Extend<BroadcastTarget>) {
        let members = self
            .members
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut slots: SmallVec<[u32; 4]> = SmallVec::new();
        members.filters.matching(message, &mut slots);
        matched.extend(
            slots
                .iter()
                .filter_map(|slot| members.targets.get(*slot as usize).and_then(Option::clone)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Outbox;
    use crate::stats::Stats;

    fn target(connection_id: u64, sid: u32) -> BroadcastTarget {
        BroadcastTarget {
            sid,
            outbox: Outbox::new(
                connection_id,
                1 << 20,
                Arc::new(Stats::default()),
                crate::clock::now(),
            ),
            missed: Arc::default(),
        }
    }

    fn filter(text: &str) -> Arc<Filter> {
        Arc::new(Filter::parse(text).expect("a valid filter"))
    }

    fn matched(group: &FilteredGroup, device: &str) -> Vec<(u64, u32)> {
        let headers = [tern_proto::Header::new("device", device)];
        let message = Message::encode("s", None, &headers, b"x").expect("valid");
        let mut targets = Vec::new();
        group.matching(&message, &mut targets);
        targets
            .iter()
            .map(|target| (target.outbox.connection_id(), target.sid))
            .collect()
    }

    #[tokio::test]
    async fn a_removed_subscriptions_slot_is_reused_without_its_filter() {
        let group = FilteredGroup::default();
        group.add(target(1, 1), filter("device = 'a'"));
        group.add(target(1, 2), filter("device = 'b'"));
        group.add(target(2, 1), filter("device = 'a'"));
        assert_eq!(matched(&group, "a"), [(1, 1), (2, 1)]);
        assert!(!group.remove(1, 2));
        assert!(matched(&group, "b").is_empty(), "its filter left with it");
        group.add(target(3, 7), filter("device = 'c'"));
        assert_eq!(matched(&group, "c"), [(3, 7)], "in the freed slot");
        assert!(matched(&group, "b").is_empty());
        assert!(!group.remove(1, 1));
        assert!(!group.remove(2, 1));
        assert!(!group.remove(9, 9), "unknown: nothing changes");
        assert!(group.remove(3, 7), "empty now");
    }
}
