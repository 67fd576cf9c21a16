//! The subject index: which subscriptions and queues a subject reaches.
//!
//! A token trie, as in nats-server's sublist. Literal tokens are hash-map children,
//! `*` is a dedicated child and `>` entries sit on the node before it. Matching a
//! subject walks at most two branches per token, so its cost depends on the
//! subject's length and the wildcards in play, not on how many subscriptions exist.
//! Validation of the text itself lives in `tern_proto::subject`.

use std::collections::HashMap;

use tern_proto::subject::{FULL_WILDCARD, SINGLE_WILDCARD};

/// Maps subscription patterns to entries of type `T` and finds the entries a literal
/// subject matches.
#[derive(Debug)]
pub struct SubjectIndex<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    single: Option<Box<Node<T>>>,
    /// Entries whose pattern ends with `>` right after this node.
    full: Vec<T>,
    /// Entries whose pattern ends exactly at this node.
    exact: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            single: None,
            full: Vec::new(),
            exact: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.single.is_none()
            && self.full.is_empty()
            && self.exact.is_empty()
    }
}

impl<T> Default for SubjectIndex<T> {
    fn default() -> Self {
        SubjectIndex {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: Clone> SubjectIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an entry under a pattern, which the caller has validated.
    pub fn insert(&mut self, pattern: &str, entry: T) {
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            if token == FULL_WILDCARD && tokens.peek().is_none() {
                node.full.push(entry);
                self.len += 1;
                return;
            }
            node = if token == SINGLE_WILDCARD {
                node.single.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(token.into()).or_default()
            };
        }
        node.exact.push(entry);
        self.len += 1;
    }

    /// Removes the first entry under `pattern` for which `is_target` holds. Returns
    /// whether one was removed; empty branches are pruned.
    pub fn remove(&mut self, pattern: &str, is_target: impl Fn(&T) -> bool) -> bool {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = remove_from(&mut self.root, &tokens, &is_target);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `visit` for every entry whose pattern matches the literal `subject`.
    pub fn for_each_match(&self, subject: &str, mut visit: impl FnMut(&T)) {
        let tokens: Vec<&str> = subject.split('.').collect();
        collect(&self.root, &tokens, &mut visit);
    }

    /// Every entry whose pattern matches the literal `subject`.
    pub fn matches(&self, subject: &str) -> Vec<T> {
        let mut found = Vec::new();
        self.for_each_match(subject, |entry| found.push(entry.clone()));
        found
    }
}

fn collect<T>(node: &Node<T>, tokens: &[&str], visit: &mut impl FnMut(&T)) {
    let Some((first, rest)) = tokens.split_first() else {
        node.exact.iter().for_each(&mut *visit);
        return;
    };
    node.full.iter().for_each(&mut *visit);
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, visit);
    }
    if let Some(child) = &node.single {
        collect(child, rest, visit);
    }
}

fn remove_from<T>(node: &mut Node<T>, tokens: &[&str], is_target: &impl Fn(&T) -> bool) -> bool {
    let take = |entries: &mut Vec<T>| match entries.iter().position(is_target) {
        Some(index) => {
            entries.remove(index);
            true
        }
        None => false,
    };
    match tokens {
        [] => take(&mut node.exact),
        [last] if *last == FULL_WILDCARD => take(&mut node.full),
        [first, rest @ ..] => {
            if *first == SINGLE_WILDCARD {
                let Some(child) = node.single.as_mut() else {
                    return false;
                };
                let removed = remove_from(child, rest, is_target);
                if removed && child.is_empty() {
                    node.single = None;
                }
                removed
            } else {
                let Some(child) = node.literal.get_mut(*first) else {
                    return false;
                };
                let removed = remove_from(child, rest, is_target);
                if removed && child.is_empty() {
                    node.literal.remove(*first);
                }
                removed
            }
        }
    }
}

/// Whether a pattern matches a literal subject, token by token. The reference the
/// trie is tested against; also handy where there is one pattern to check.
pub fn pattern_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(pattern_token) = pattern_tokens.next() {
        if pattern_token == FULL_WILDCARD && pattern_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(token) if pattern_token == SINGLE_WILDCARD || pattern_token == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(mut values: Vec<u32>) -> Vec<u32> {
        values.sort_unstable();
        values
    }

    #[test]
    fn wildcards_match_as_documented() {
        let mut index = SubjectIndex::new();
        index.insert("orders.eu.created", 1);
        index.insert("orders.*.created", 2);
        index.insert("orders.>", 3);
        index.insert("*.eu.*", 4);
        index.insert(">", 5);
        index.insert("orders", 6);
        assert_eq!(
            sorted(index.matches("orders.eu.created")),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(sorted(index.matches("orders.us.created")), vec![2, 3, 5]);
        assert_eq!(sorted(index.matches("orders")), vec![5, 6]);
        assert_eq!(sorted(index.matches("orders.eu")), vec![3, 5]);
        assert_eq!(sorted(index.matches("billing")), vec![5]);
    }

    #[test]
    fn removing_prunes_and_keeps_the_rest() {
        let mut index = SubjectIndex::new();
        index.insert("a.*.c", 1);
        index.insert("a.*.c", 2);
        index.insert("a.>", 3);
        assert!(index.remove("a.*.c", |entry| *entry == 1));
        assert!(!index.remove("a.*.c", |entry| *entry == 1));
        assert_eq!(sorted(index.matches("a.b.c")), vec![2, 3]);
        assert!(index.remove("a.*.c", |entry| *entry == 2));
        assert!(index.remove("a.>", |entry| *entry == 3));
        assert!(index.is_empty());
        assert!(index.root.is_empty(), "branches pruned");
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof!["[ab]".prop_map(String::from), Just("*".to_owned())]
    }

    fn pattern() -> impl Strategy<Value = String> {
        (proptest::collection::vec(token(), 1..4), any::<bool>()).prop_map(|(mut tokens, full)| {
            if full {
                tokens.push(">".to_owned());
            }
            tokens.join(".")
        })
    }

    fn subject() -> impl Strategy<Value = String> {
        proptest::collection::vec("[abc]", 1..5).prop_map(|tokens| tokens.join("."))
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_token_by_token_matching(
            patterns in proptest::collection::vec(pattern(), 0..20),
            subjects in proptest::collection::vec(subject(), 1..20),
            removals in proptest::collection::vec(any::<bool>(), 20),
        ) {
            let mut index = SubjectIndex::new();
            for (id, pattern) in patterns.iter().enumerate() {
                index.insert(pattern, id as u32);
            }
            let mut live: Vec<(u32, &String)> = patterns.iter().enumerate().map(|(id, p)| (id as u32, p)).collect();
            for (id, pattern) in patterns.iter().enumerate() {
                if removals[id] {
                    prop_assert!(index.remove(pattern, |entry| *entry == id as u32));
                    live.retain(|(live_id, _)| *live_id != id as u32);
                }
            }
            prop_assert_eq!(index.len(), live.len());
            for subject in &subjects {
                let expected: Vec<u32> = live.iter().filter(|(_, p)| pattern_matches(p, subject)).map(|(id, _)| *id).collect();
                prop_assert_eq!(sorted(index.matches(subject)), sorted(expected), "subject {}", subject);
            }
        }
    }
}
