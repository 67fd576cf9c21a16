//! What one user may do: subject rules for publishing and subscribing (allow and
//! deny lists of patterns, deny wins), the queues it may consume and declare, and
//! whether it may answer the requests it receives (`allow_responses`).
//!
//! Everything not allowed is denied: a user without a `publish` table publishes
//! nothing. Rules are patterns in the subject syntax (`*` one token, `>` one or
//! more, last). A publish subject is allowed when an allow pattern matches it and
//! no deny pattern does. A subscription pattern is allowed when an allow pattern
//! *covers* it (every subject it can match, the allow pattern matches too) and no
//! deny pattern *overlaps* it (no subject matches both): so `billing.>` is refused
//! when `billing.secret` is denied, and nothing denied is ever delivered without a
//! per-message check.

use tern_proto::subject::{validate_pattern, SubjectError};

/// An allow list and a deny list of subject patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    allow: Vec<Box<str>>,
    deny: Vec<Box<str>>,
}

impl SubjectRules {
    /// Rules from patterns (each validated as a subscription pattern).
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Result<SubjectRules, RuleError> {
        let check = |patterns: Vec<String>| {
            patterns
                .into_iter()
                .map(|pattern| match validate_pattern(&pattern) {
                    Ok(()) => Ok(pattern.into_boxed_str()),
                    Err(source) => Err(RuleError { pattern, source }),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(SubjectRules {
            allow: check(allow)?,
            deny: check(deny)?,
        })
    }

    /// Everything (`>`), nothing denied.
    pub fn everything() -> SubjectRules {
        SubjectRules {
            allow: vec![">".into()],
            deny: Vec::new(),
        }
    }

    /// May a message be published to (or a queue named) `subject` (no wildcards)?
    pub fn permits_subject(&self, subject: &str) -> bool {
        self.allow.iter().any(|allow| covers(allow, subject))
            && !self.deny.iter().any(|deny| overlaps(deny, subject))
    }

    /// May a subscription with `pattern` be made? See the module docs.
    pub fn permits_pattern(&self, pattern: &str) -> bool {
        self.allow.iter().any(|allow| covers(allow, pattern))
            && !self.deny.iter().any(|deny| overlaps(deny, pattern))
    }
}

/// A rule that is not a valid pattern.
#[derive(Debug, thiserror::Error)]
#[error("{pattern:?} is not a valid subject pattern: {source}")]
pub struct RuleError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub source: SubjectError,
}

/// What one user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: SubjectRules,
    /// Patterns it may subscribe to (and bind a queue it creates to).
    pub subscribe: SubjectRules,
    /// Queues (names, wildcards allowed) it may consume from; consuming from a
    /// queue that does not exist yet creates it, bound to a pattern `subscribe`
    /// allows.
    pub consume: SubjectRules,
    /// Queues it may administer: purge and delete.
    pub declare: SubjectRules,
    /// May it publish, once and within [`crate::response_permits::RESPONSE_PERMIT_TTL`], to the
    /// reply-to of each request delivered to it, whatever `publish` says?
    pub allow_responses: bool,
}

impl Permissions {
    /// Everything allowed (a broker without `AUTH_FILE`, in tests).
    pub fn everything() -> Permissions {
        Permissions {
            publish: SubjectRules::everything(),
            subscribe: SubjectRules::everything(),
            consume: SubjectRules::everything(),
            declare: SubjectRules::everything(),
            allow_responses: true,
        }
    }
}

/// Does `outer` match every subject `inner` matches (`inner` may be a plain
/// subject)? Both are valid patterns.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut outer_tokens = outer.split('.');
    let mut inner_tokens = inner.split('.');
    loop {
        match (outer_tokens.next(), inner_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(_), Some("*")) => return false,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Is there a subject both patterns match?
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a_tokens = a.split('.');
    let mut b_tokens = b.split('.');
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> SubjectRules {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        SubjectRules::new(owned(allow), owned(deny)).expect("valid rules")
    }

    #[test]
    fn covering() {
        assert!(covers(">", "a"));
        assert!(covers(">", "a.*.>"));
        assert!(covers("a.>", "a.b"));
        assert!(!covers("a.>", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*", "a.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(covers("_INBOX.>", "_INBOX.abc.*"));
        assert!(!covers("_INBOX.*", "_INBOX.abc.def"));
    }

    #[test]
    fn overlapping() {
        assert!(overlaps("a.b", "a.*"));
        assert!(overlaps("a.>", "*.b"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a"));
        assert!(overlaps("a.*.c", "a.b.*"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(overlaps(">", "x.y.z"));
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_by_default() {
        let publish = rules(&["orders.>"], &["orders.internal.>"]);
        assert!(publish.permits_subject("orders.created"));
        assert!(!publish.permits_subject("orders.internal.audit"));
        assert!(!publish.permits_subject("billing.x"));
        assert!(!SubjectRules::default().permits_subject("a"));
        let subscribe = rules(&["billing.>"], &["billing.secret"]);
        assert!(subscribe.permits_pattern("billing.paid"));
        assert!(subscribe.permits_pattern("billing.*.eu"));
        // Could receive the denied subject: refused as a whole.
        assert!(!subscribe.permits_pattern("billing.*"));
        assert!(!subscribe.permits_pattern(">"));
    }

    #[test]
    fn invalid_rules_are_named() {
        let error = SubjectRules::new(vec!["a.>.b".into()], vec![]).expect_err("invalid");
        assert_eq!(error.pattern, "a.>.b");
    }
}
