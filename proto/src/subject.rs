//! Subjects, patterns and queue names.
//!
//! A subject is a non-empty sequence of non-empty tokens separated by `.`
//! (`orders.eu.created`). A pattern may also use two wildcard tokens: `*` matches
//! exactly one token, `>` matches one or more trailing tokens and must be last.
//! Wildcard characters are only meaningful as whole tokens; `a*` is rejected rather
//! than silently treated as a literal. Whitespace and control characters are not
//! allowed anywhere, so subjects are safe to print and to use as log fields.

/// Longest subject, pattern or queue name, in bytes. Long enough for deep hierarchies
/// (`tenant.region.service.entity.event.version`), short enough to keep routing keys
/// cheap to hash and compare.
pub const MAX_SUBJECT_LENGTH: usize = 256;

/// The single-token wildcard.
pub const SINGLE_WILDCARD: &str = "*";

/// The trailing multi-token wildcard.
pub const FULL_WILDCARD: &str = ">";

/// Why a subject, pattern or queue name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Nothing at all.
    #[error("subject is empty")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LENGTH`].
    #[error("subject is {length} bytes; the maximum is {max}")]
    TooLong {
        /// Its length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("subject `{0}` has an empty token")]
    EmptyToken(String),
    /// Whitespace or a control character.
    #[error("subject `{subject}` contains the invalid character {character:?}")]
    InvalidCharacter {
        /// The subject.
        subject: String,
        /// The offending character.
        character: char,
    },
    /// A wildcard where only literal subjects are allowed (publish, reply-to, queue name).
    #[error("`{0}` contains a wildcard; publish subjects must be literal")]
    Wildcard(String),
    /// `*` or `>` inside a token, or `>` before the last token.
    #[error(
        "pattern `{0}` misuses a wildcard: `*` and `>` must be whole tokens and `>` must be last"
    )]
    MisplacedWildcard(String),
}

impl SubjectError {
    /// The error code a server reports for this problem in a subject or pattern.
    pub fn error_code(&self) -> crate::ErrorCode {
        match self {
            SubjectError::Wildcard(_) => crate::ErrorCode::WildcardInSubject,
            _ => crate::ErrorCode::InvalidSubject,
        }
    }
}

/// Checks a literal subject, as used by PUBLISH and reply-to.
///
/// ```
/// use tern_proto::subject::validate_subject;
/// assert!(validate_subject("orders.eu.created").is_ok());
/// assert!(validate_subject("orders.*").is_err());
/// assert!(validate_subject("orders..eu").is_err());
/// ```
pub fn validate_subject(subject: &str) -> Result<(), SubjectError> {
    check_tokens(subject, false)
}

/// Checks a subscription pattern, which may contain `*` and a final `>`.
///
/// ```
/// use tern_proto::subject::validate_pattern;
/// assert!(validate_pattern("orders.*.created").is_ok());
/// assert!(validate_pattern("orders.>").is_ok());
/// assert!(validate_pattern("orders.>.created").is_err());
/// ```
pub fn validate_pattern(pattern: &str) -> Result<(), SubjectError> {
    check_tokens(pattern, true)
}

/// True when the pattern contains a wildcard token.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern
        .split('.')
        .any(|token| token == SINGLE_WILDCARD || token == FULL_WILDCARD)
}

fn check_tokens(text: &str, wildcards_allowed: bool) -> Result<(), SubjectError> {
    if text.is_empty() {
        return Err(SubjectError::Empty);
    }
    if text.len() > MAX_SUBJECT_LENGTH {
        return Err(SubjectError::TooLong {
            length: text.len(),
            max: MAX_SUBJECT_LENGTH,
        });
    }
    if let Some(character) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubjectError::InvalidCharacter {
            subject: text.to_owned(),
            character,
        });
    }
    let mut tokens = text.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken(text.to_owned()));
        }
        let is_last = tokens.peek().is_none();
        match token {
            SINGLE_WILDCARD | FULL_WILDCARD if !wildcards_allowed => {
                return Err(SubjectError::Wildcard(text.to_owned()))
            }
            SINGLE_WILDCARD => {}
            FULL_WILDCARD if is_last => {}
            _ if token.contains(['*', '>']) || token == FULL_WILDCARD => {
                return Err(if wildcards_allowed {
                    SubjectError::MisplacedWildcard(text.to_owned())
                } else {
                    SubjectError::Wildcard(text.to_owned())
                })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_subjects_are_accepted() {
        for subject in ["a", "orders.eu.created", "_INBOX.abc.1", "a-b_c.9"] {
            assert_eq!(validate_subject(subject), Ok(()), "{subject}");
        }
    }

    #[test]
    fn bad_subjects_get_specific_errors() {
        assert_eq!(validate_subject(""), Err(SubjectError::Empty));
        assert!(matches!(
            validate_subject("a..b"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_subject(".a"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_subject("a."),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            validate_subject("a b"),
            Err(SubjectError::InvalidCharacter { character: ' ', .. })
        ));
        assert!(matches!(
            validate_subject("a.*"),
            Err(SubjectError::Wildcard(_))
        ));
        assert!(matches!(
            validate_subject("a.>"),
            Err(SubjectError::Wildcard(_))
        ));
        assert!(matches!(
            validate_subject("a*"),
            Err(SubjectError::Wildcard(_))
        ));
        let long = "a".repeat(MAX_SUBJECT_LENGTH + 1);
        assert!(matches!(
            validate_subject(&long),
            Err(SubjectError::TooLong { .. })
        ));
    }

    #[test]
    fn patterns_allow_whole_token_wildcards_only() {
        for pattern in ["*", ">", "a.*", "a.>", "*.b.*", "a.*.>"] {
            assert_eq!(validate_pattern(pattern), Ok(()), "{pattern}");
        }
        for pattern in ["a.>.b", "a*", "a.b>", ">.a"] {
            assert!(
                matches!(
                    validate_pattern(pattern),
                    Err(SubjectError::MisplacedWildcard(_))
                ),
                "{pattern}"
            );
        }
    }
}
