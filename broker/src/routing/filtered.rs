//! Broadcast subscriptions with header filters, grouped by pattern and indexed.
//!
//! One [`FilteredGroup`] per subscription pattern sits in the subject index as a
//! single route, so a subject's routes do not grow with the number of filtered
//! subscriptions. Inside it, a counting match: every `=` and `IN` predicate is
//! indexed by (header name, value); for one message each of its headers looks its
//! (name, value) up and marks the predicates it satisfies, and a subscription is a
//! candidate once all of its indexed predicates are marked (a bit per predicate: a
//! filter has at most 32). Candidates, and the few filters with no indexed
//! predicate at all (only `!=`, `^=`, `EXISTS`), are then checked in full. The cost
//! of a message is its headers' index hits plus its candidates, not the number of
//! filtered subscriptions.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytestring::ByteString;
use rustc_hash::FxHashMap;
use tern_proto::filter::{Filter, Predicate};
use tern_proto::Message;

use super::fan_out::BroadcastTarget;

/// One filtered subscription in a group.
#[derive(Debug)]
struct Member {
    target: BroadcastTarget,
    filter: Arc<Filter>,
    /// One bit per indexed predicate; a candidate has all of them.
    required: u32,
}

#[derive(Debug, Default)]
struct Members {
    /// By a key that is never reused while the group lives.
    members: FxHashMap<u64, Member>,
    next_key: u64,
    /// header name → value → (member, the bit of its predicate that value satisfies).
    index: FxHashMap<ByteString, FxHashMap<ByteString, Vec<(u64, u32)>>>,
    /// Members with no indexed predicate: checked against every message.
    unindexed: Vec<u64>,
}

/// The filtered broadcast subscriptions of one pattern.
#[derive(Debug, Default)]
pub struct FilteredGroup {
    members: RwLock<Members>,
}

impl FilteredGroup {
    fn read(&self) -> RwLockReadGuard<'_, Members> {
        self.members
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a subscription with its filter.
    pub fn add(&self, target: BroadcastTarget, filter: Arc<Filter>) {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = members.next_key;
        members.next_key += 1;
        let mut required = 0u32;
        for (position, predicate) in filter.predicates().iter().enumerate() {
            let bit = 1u32 << position;
            let values: &[ByteString] = match predicate {
                Predicate::Equals { value, .. } => std::slice::from_ref(value),
                Predicate::In { values, .. } => values,
                _ => continue,
            };
            required |= bit;
            let name = ByteString::from(predicate.name());
            let by_value = members.index.entry(name).or_default();
            for value in values {
                by_value.entry(value.clone()).or_default().push((key, bit));
            }
        }
        if required == 0 {
            members.unindexed.push(key);
        }
        members.members.insert(
            key,
            Member {
                target,
                filter,
                required,
            },
        );
    }

    /// Removes subscription `sid` of connection `connection_id`; returns whether the
    /// group is now empty.
    pub fn remove(&self, connection_id: u64, sid: u32) -> bool {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let key = members
            .members
            .iter()
            .find(|(_, member)| member.target.is(connection_id, sid))
            .map(|(key, _)| *key);
        if let Some(key) = key {
            members.members.remove(&key);
            members.unindexed.retain(|other| *other != key);
            members.index.retain(|_, by_value| {
                by_value.retain(|_, entries| {
                    entries.retain(|(other, _)| *other != key);
                    !entries.is_empty()
                });
                !by_value.is_empty()
            });
        }
        members.members.is_empty()
    }

    /// Appends to `matched` every subscription whose filter matches `message`.
    pub fn matching(&self, message: &Message, matched: &mut Vec<BroadcastTarget>) {
        let members = self.read();
        if members.members.is_empty() {
            return;
        }
        let mut marks: FxHashMap<u64, u32> = FxHashMap::default();
        if !members.index.is_empty() {
            for (name, value) in message.headers() {
                let entries = members
                    .index
                    .get(name)
                    .and_then(|by_value| by_value.get(value));
                for (member, bit) in entries.into_iter().flatten() {
                    *marks.entry(*member).or_default() |= bit;
                }
            }
        }
        for (key, marked) in marks {
            if let Some(member) = members.members.get(&key) {
                if marked == member.required && member.filter.matches(message.headers()) {
                    matched.push(member.target.clone());
                }
            }
        }
        for key in &members.unindexed {
            if let Some(member) = members.members.get(key) {
                if member.filter.matches(message.headers()) {
                    matched.push(member.target.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{MissedCounter, Outbox};
    use proptest::prelude::*;
    use tern_proto::Header;

    fn target(sid: u32) -> BroadcastTarget {
        BroadcastTarget {
            sid,
            outbox: Outbox::new(
                1,
                10,
                Arc::new(crate::stats::Stats::default()),
                crate::clock::now(),
            ),
            missed: MissedCounter::default(),
        }
    }

    fn message(headers: &[(&str, &str)]) -> Message {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(name, value)| Header::new(*name, *value))
            .collect();
        Message::encode("s", None, &headers, b"").expect("valid")
    }

    fn matched_sids(group: &FilteredGroup, message: &Message) -> Vec<u32> {
        let mut matched = Vec::new();
        group.matching(message, &mut matched);
        let mut sids: Vec<u32> = matched.iter().map(|target| target.sid).collect();
        sids.sort_unstable();
        sids
    }

    #[test]
    fn only_matching_filters_receive_and_removal_forgets() {
        let group = FilteredGroup::default();
        let filters = [
            "profile = 'u1' AND device = 'd1'",
            "profile = 'u1' AND device = 'd2'",
            "profile = 'u1'",
            "device IN ('d1', 'd3')",
            "NOT device EXISTS",
        ];
        for (sid, text) in filters.iter().enumerate() {
            let filter = Arc::new(Filter::parse(text).expect("valid"));
            group.add(target(sid as u32), filter);
        }
        let to_d1 = message(&[("profile", "u1"), ("device", "d1")]);
        assert_eq!(matched_sids(&group, &to_d1), [0, 2, 3]);
        assert_eq!(matched_sids(&group, &message(&[("profile", "u2")])), [4]);
        assert!(!group.remove(1, 0));
        assert_eq!(matched_sids(&group, &to_d1), [2, 3]);
    }

    fn arbitrary_filter() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a", "b", "c"]);
        let value = prop::sample::select(vec!["1", "2", "3"]);
        let predicate =
            (name, value.clone(), value, 0..6u8).prop_map(|(n, v, w, kind)| match kind {
                0 => format!("{n} = '{v}'"),
                1 => format!("{n} != '{v}'"),
                2 => format!("{n} IN ('{v}', '{w}')"),
                3 => format!("{n} ^= '{v}'"),
                4 => format!("{n} EXISTS"),
                _ => format!("NOT {n} EXISTS"),
            });
        prop::collection::vec(predicate, 0..4).prop_map(|predicates| predicates.join(" AND "))
    }

    proptest! {
        /// The index agrees with evaluating every filter in full.
        #[test]
        fn the_index_agrees_with_plain_evaluation(
            filters in prop::collection::vec(arbitrary_filter(), 1..12),
            headers in prop::collection::vec(
                (prop::sample::select(vec!["a", "b", "c", "d"]), prop::sample::select(vec!["1", "2", "3"])),
                0..5,
            ),
        ) {
            let group = FilteredGroup::default();
            let parsed: Vec<Filter> = filters.iter().map(|text| Filter::parse(text).expect("valid")).collect();
            for (sid, filter) in parsed.iter().enumerate() {
                group.add(target(sid as u32), Arc::new(filter.clone()));
            }
            let message = message(&headers);
            let expected: Vec<u32> = parsed
                .iter()
                .enumerate()
                .filter(|(_, filter)| filter.matches(message.headers()))
                .map(|(sid, _)| sid as u32)
                .collect();
            prop_assert_eq!(matched_sids(&group, &message), expected);
        }
    }
}
