//! A counting index over header filters: which of many filters match one message,
//! without evaluating every filter.
//!
//! Every `=` and `IN` predicate is indexed by (header name, value). For a message,
//! each of its headers looks its (name, value) up and marks the predicates it
//! satisfies (a bit per predicate: a filter has at most 32); a filter is a
//! candidate once all of its indexed predicates are marked, and candidates are then
//! checked in full. Filters with no indexed predicate (only `!=`, `^=`, `EXISTS`,
//! or empty) are checked against every message. The cost of a message is its
//! headers' index hits plus its candidates, not the number of filters.
//!
//! Used by filtered broadcast subscriptions (`routing/filtered.rs`) and by queues
//! with filtered consumers (`queue/filtered.rs`).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytestring::ByteString;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tern_proto::filter::{Filter, Predicate};
use tern_proto::Message;

/// One indexed predicate a (name, value) satisfies. It carries what deciding the
/// match needs, so a message whose filters are fully indexed never looks the
/// filters themselves up.
#[derive(Debug, Clone, Copy)]
struct Hit<K> {
    key: K,
    /// This predicate's bit.
    bit: u32,
    /// The bits of all of the filter's indexed predicates.
    required: u32,
    /// Whether those are all of its predicates.
    complete: bool,
}

/// Header values of up to this many bytes are kept inside the index's table.
const INLINE_VALUE: usize = 22;

/// A header value as a key of the index: short ones (device and user ids) inside
/// the table itself, so a lookup among thousands of values touches the table's slot
/// and no other memory; longer ones boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ValueKey {
    Inline { len: u8, bytes: [u8; INLINE_VALUE] },
    Boxed(Box<[u8]>),
}

impl ValueKey {
    fn new(value: &str) -> Self {
        let value = value.as_bytes();
        match u8::try_from(value.len()) {
            Ok(len) if value.len() <= INLINE_VALUE => {
                let mut bytes = [0; INLINE_VALUE];
                bytes[..value.len()].copy_from_slice(value);
                ValueKey::Inline { len, bytes }
            }
            _ => ValueKey::Boxed(value.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            ValueKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ValueKey::Boxed(bytes) => bytes,
        }
    }
}

// Hashes as its bytes do, so the table is searched with a `&[u8]` (`Borrow`).
impl Hash for ValueKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for ValueKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// The predicates one (name, value) satisfies: usually one, kept inline.
type Hits<K> = SmallVec<[Hit<K>; 1]>;

/// Filters by key, indexed.
#[derive(Debug)]
pub struct FilterIndex<K> {
    /// Each filter (what a match of a partly indexed one is checked against).
    filters: FxHashMap<K, Arc<Filter>>,
    /// header name → value → the filters one of whose predicates that value
    /// satisfies.
    index: FxHashMap<ByteString, FxHashMap<ValueKey, Hits<K>>>,
    /// Filters with no indexed predicate.
    unindexed: Vec<K>,
}

impl<K> Default for FilterIndex<K> {
    fn default() -> Self {
        FilterIndex {
            filters: FxHashMap::default(),
            index: FxHashMap::default(),
            unindexed: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> FilterIndex<K> {
    /// Adds `filter` under `key` (a key already present is replaced).
    pub fn insert(&mut self, key: K, filter: Arc<Filter>) {
        self.remove(key);
        let mut required = 0u32;
        for (position, predicate) in filter.predicates().iter().enumerate() {
            if matches!(predicate, Predicate::Equals { .. } | Predicate::In { .. }) {
                required |= 1u32 << position;
            }
        }
        let complete = filter.predicates().len() == required.count_ones() as usize;
        for (position, predicate) in filter.predicates().iter().enumerate() {
            let values: &[ByteString] = match predicate {
                Predicate::Equals { value, .. } => std::slice::from_ref(value),
                Predicate::In { values, .. } => values,
                _ => continue,
            };
            let hit = Hit {
                key,
                bit: 1u32 << position,
                required,
                complete,
            };
            let by_value = self
                .index
                .entry(ByteString::from(predicate.name()))
                .or_default();
            for value in values {
                by_value.entry(ValueKey::new(value)).or_default().push(hit);
            }
        }
        if required == 0 {
            self.unindexed.push(key);
        }
        self.filters.insert(key, filter);
    }

    /// Removes the filter under `key`, if any.
    pub fn remove(&mut self, key: K) {
        let Some(filter) = self.filters.remove(&key) else {
            return;
        };
        self.unindexed.retain(|other| *other != key);
        for predicate in filter.predicates() {
            let values: &[ByteString] = match predicate {
                Predicate::Equals { value, .. } => std::slice::from_ref(value),
                Predicate::In { values, .. } => values,
                _ => continue,
            };
            let name = predicate.name();
            if let Some(by_value) = self.index.get_mut(name) {
                for value in values {
                    if let Some(entries) = by_value.get_mut(str::as_bytes(value)) {
                        entries.retain(|hit| hit.key != key);
                        if entries.is_empty() {
                            by_value.remove(str::as_bytes(value));
                        }
                    }
                }
                if by_value.is_empty() {
                    self.index.remove(name);
                }
            }
        }
    }

    /// The filter under `key`.
    pub fn get(&self, key: K) -> Option<&Arc<Filter>> {
        self.filters.get(&key)
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Appends the key of every filter that matches `message` to `matched`.
    pub fn matching(&self, message: &Message, matched: &mut impl Extend<K>) {
        if !self.index.is_empty() {
            // The predicates the headers satisfy, grouped by filter by sorting: no
            // map per message, and usually a handful (no allocation for up to 8).
            let mut hits: SmallVec<[Hit<K>; 8]> = SmallVec::new();
            for (name, value) in message.headers() {
                let entries = self
                    .index
                    .get(name)
                    .and_then(|by_value| by_value.get(value.as_bytes()));
                if let Some(entries) = entries {
                    hits.extend_from_slice(entries);
                }
            }
            if hits.len() > 1 {
                hits.sort_unstable_by_key(|hit| hit.key);
            }
            let mut start = 0;
            while start < hits.len() {
                let first = hits[start];
                let mut marked = 0u32;
                let mut end = start;
                while end < hits.len() && hits[end].key == first.key {
                    marked |= hits[end].bit;
                    end += 1;
                }
                start = end;
                if marked != first.required {
                    continue;
                }
                if first.complete
                    || self
                        .filters
                        .get(&first.key)
                        .is_some_and(|filter| filter.matches(message.headers()))
                {
                    matched.extend([first.key]);
                }
            }
        }
        for key in &self.unindexed {
            if let Some(filter) = self.filters.get(key) {
                if filter.matches(message.headers()) {
                    matched.extend([*key]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tern_proto::Header;

    fn message(headers: &[(&str, &str)]) -> Message {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(name, value)| Header::new(*name, *value))
            .collect();
        Message::encode("s", None, &headers, b"").expect("valid")
    }

    fn matched(index: &FilterIndex<u32>, message: &Message) -> Vec<u32> {
        let mut keys = Vec::new();
        index.matching(message, &mut keys);
        keys.sort_unstable();
        keys
    }

    #[test]
    fn only_matching_filters_are_found_and_removal_forgets() {
        let mut index = FilterIndex::default();
        let filters = [
            "profile = 'u1' AND device = 'd1'",
            "profile = 'u1' AND device = 'd2'",
            "profile = 'u1'",
            "device IN ('d1', 'd3')",
            "NOT device EXISTS",
            "",
        ];
        for (key, text) in filters.iter().enumerate() {
            index.insert(key as u32, Arc::new(Filter::parse(text).expect("valid")));
        }
        let to_d1 = message(&[("profile", "u1"), ("device", "d1")]);
        assert_eq!(matched(&index, &to_d1), [0, 2, 3, 5]);
        assert_eq!(matched(&index, &message(&[("profile", "u2")])), [4, 5]);
        index.remove(0);
        index.remove(5);
        assert_eq!(matched(&index, &to_d1), [2, 3]);
        for key in 1..5 {
            index.remove(key);
        }
        assert!(index.is_empty() && index.index.is_empty() && index.unindexed.is_empty());
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
        /// The index agrees with evaluating every filter in full, also after some
        /// filters were removed.
        #[test]
        fn the_index_agrees_with_plain_evaluation(
            filters in prop::collection::vec(arbitrary_filter(), 1..12),
            removed in prop::collection::vec(0..12u32, 0..4),
            headers in prop::collection::vec(
                (prop::sample::select(vec!["a", "b", "c", "d"]), prop::sample::select(vec!["1", "2", "3"])),
                0..5,
            ),
        ) {
            let mut index = FilterIndex::default();
            let parsed: Vec<Filter> = filters.iter().map(|text| Filter::parse(text).expect("valid")).collect();
            for (key, filter) in parsed.iter().enumerate() {
                index.insert(key as u32, Arc::new(filter.clone()));
            }
            for key in &removed {
                index.remove(*key);
            }
            let message = message(&headers);
            let expected: Vec<u32> = parsed
                .iter()
                .enumerate()
                .filter(|(key, filter)| !removed.contains(&(*key as u32)) && filter.matches(message.headers()))
                .map(|(key, _)| key as u32)
                .collect();
            prop_assert_eq!(matched(&index, &message), expected);
        }
    }
}
