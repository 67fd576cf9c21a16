//! Header filters (PROTOCOL.md § 7, "Header filters"): a conjunction of predicates
//! over a message's headers, parsed once when a subscription is made.
//!
//! ```text
//! filter    = "" | predicate { AND predicate }
//! predicate = name "=" value | name "!=" value | name "^=" value
//!           | name IN "(" value { "," value } ")"
//!           | name EXISTS | NOT name EXISTS
//! name      = bare | "\"" { any character but "\"", or "\"\"" } "\""
//! bare      = 1*( ASCII letter | digit | "_" | "-" | "." | ":" | "/" )
//! value     = "'" { any character but "'", or "''" } "'"
//! ```
//!
//! Keywords (`AND`, `IN`, `EXISTS`, `NOT`) are ASCII, any case. Between tokens any
//! ASCII whitespace. A header that appears several times matches a positive
//! predicate (`=`, `IN`, `^=`, `EXISTS`) if any of its values does; `!=` is the
//! negation of `=` (it also matches when the header is absent), `NOT … EXISTS` of
//! `EXISTS`. An empty filter matches every message.

use std::fmt;

use bytestring::ByteString;

/// The longest filter text accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;

/// The most predicates one filter may join with `AND`.
pub const MAX_PREDICATES: usize = 32;

/// The most values one `IN` list may hold.
pub const MAX_IN_VALUES: usize = 64;

/// One condition on a header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Predicate {
    /// `name = 'value'`: some value of the header equals it.
    Equals {
        /// The header.
        name: ByteString,
        /// The value.
        value: ByteString,
    },
    /// `name != 'value'`: no value of the header equals it (absent included).
    NotEquals {
        /// The header.
        name: ByteString,
        /// The value.
        value: ByteString,
    },
    /// `name IN ('a', 'b')`: some value of the header is one of them.
    In {
        /// The header.
        name: ByteString,
        /// The values (at least one).
        values: Vec<ByteString>,
    },
    /// `name ^= 'prefix'`: some value of the header starts with it.
    Prefix {
        /// The header.
        name: ByteString,
        /// The prefix.
        prefix: ByteString,
    },
    /// `name EXISTS`: the header is present.
    Exists {
        /// The header.
        name: ByteString,
    },
    /// `NOT name EXISTS`: the header is absent.
    NotExists {
        /// The header.
        name: ByteString,
    },
}

impl Predicate {
    /// The header this predicate is about.
    pub fn name(&self) -> &str {
        match self {
            Predicate::Equals { name, .. }
            | Predicate::NotEquals { name, .. }
            | Predicate::In { name, .. }
            | Predicate::Prefix { name, .. }
            | Predicate::Exists { name }
            | Predicate::NotExists { name } => name,
        }
    }

    /// Whether the predicate holds for `headers` (name, value pairs, in order, with
    /// repeats).
    pub fn matches<'a>(&self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let name = self.name();
        let mut values = headers
            .into_iter()
            .filter(|(header, _)| *header == name)
            .map(|(_, value)| value);
        match self {
            Predicate::Equals { value, .. } => values.any(|candidate| candidate == &**value),
            Predicate::NotEquals { value, .. } => values.all(|candidate| candidate != &**value),
            Predicate::In {
                values: allowed, ..
            } => values.any(|candidate| allowed.iter().any(|value| candidate == &**value)),
            Predicate::Prefix { prefix, .. } => {
                values.any(|candidate| candidate.starts_with(&**prefix))
            }
            Predicate::Exists { .. } => values.next().is_some(),
            Predicate::NotExists { .. } => values.next().is_none(),
        }
    }
}

/// A parsed header filter: its predicates, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Filter {
    predicates: Vec<Predicate>,
}

impl Filter {
    /// The filter that matches everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Parses `text` (see the module documentation); an error says where.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError::new(
                MAX_FILTER_BYTES,
                format!(
                    "the filter is {} bytes long; the most is {MAX_FILTER_BYTES}",
                    text.len()
                ),
            ));
        }
        Parser { text, at: 0 }.filter()
    }

    /// Its predicates (empty: matches everything).
    pub fn predicates(&self) -> &[Predicate] {
        &self.predicates
    }

    /// Whether it matches every message.
    pub fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }

    /// Whether every predicate holds for `headers` (name, value pairs). This is the
    /// plain evaluation; indexes must agree with it.
    pub fn matches<'a, I>(&self, headers: I) -> bool
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone,
    {
        let headers = headers.into_iter();
        self.predicates
            .iter()
            .all(|predicate| predicate.matches(headers.clone()))
    }
}

impl fmt::Display for Filter {
    /// The filter in its canonical text form, which parses back to the same filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, predicate) in self.predicates.iter().enumerate() {
            if index > 0 {
                f.write_str(" AND ")?;
            }
            match predicate {
                Predicate::Equals { name, value } => {
                    write!(f, "{} = {}", Quoted::name(name), Quoted::value(value))?
                }
                Predicate::NotEquals { name, value } => {
                    write!(f, "{} != {}", Quoted::name(name), Quoted::value(value))?
                }
                Predicate::Prefix { name, prefix } => {
                    write!(f, "{} ^= {}", Quoted::name(name), Quoted::value(prefix))?
                }
                Predicate::In { name, values } => {
                    write!(f, "{} IN (", Quoted::name(name))?;
                    for (index, value) in values.iter().enumerate() {
                        if index > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{}", Quoted::value(value))?;
                    }
                    f.write_str(")")?;
                }
                Predicate::Exists { name } => write!(f, "{} EXISTS", Quoted::name(name))?,
                Predicate::NotExists { name } => write!(f, "NOT {} EXISTS", Quoted::name(name))?,
            }
        }
        Ok(())
    }
}

/// A name or value written back in filter syntax.
struct Quoted<'a> {
    text: &'a str,
    quote: char,
    bare_allowed: bool,
}

impl<'a> Quoted<'a> {
    fn name(text: &'a str) -> Self {
        Quoted {
            text,
            quote: '"',
            bare_allowed: !text.is_empty()
                && text.bytes().all(is_bare_name_byte)
                && keyword(text).is_none(),
        }
    }

    fn value(text: &'a str) -> Self {
        Quoted {
            text,
            quote: '\'',
            bare_allowed: false,
        }
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare_allowed {
            return f.write_str(self.text);
        }
        write!(f, "{}", self.quote)?;
        for character in self.text.chars() {
            if character == self.quote {
                write!(f, "{}", self.quote)?;
            }
            write!(f, "{character}")?;
        }
        write!(f, "{}", self.quote)
    }
}

/// Why a filter does not parse, and where (a byte offset into its text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at byte {position}: {message}")]
pub struct FilterError {
    /// Byte offset of the offending token (the text's length for "ended early").
    pub position: usize,
    /// What was wrong.
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

fn is_bare_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':' | b'/')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    In,
    Exists,
    Not,
}

fn keyword(word: &str) -> Option<Keyword> {
    [
        ("AND", Keyword::And),
        ("IN", Keyword::In),
        ("EXISTS", Keyword::Exists),
        ("NOT", Keyword::Not),
    ]
    .into_iter()
    .find(|(text, _)| word.eq_ignore_ascii_case(text))
    .map(|(_, keyword)| keyword)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word: a name, or a keyword.
    Word(String),
    /// A double-quoted name (never a keyword).
    QuotedName(String),
    /// A single-quoted value.
    Value(String),
    Equals,
    NotEquals,
    Prefix,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(word) => format!("`{word}`"),
            Token::QuotedName(name) => format!("the name \"{name}\""),
            Token::Value(value) => format!("the value '{value}'"),
            Token::Equals => "`=`".to_owned(),
            Token::NotEquals => "`!=`".to_owned(),
            Token::Prefix => "`^=`".to_owned(),
            Token::Open => "`(`".to_owned(),
            Token::Close => "`)`".to_owned(),
            Token::Comma => "`,`".to_owned(),
            Token::End => "the end of the filter".to_owned(),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn filter(mut self) -> Result<Filter, FilterError> {
        let mut predicates = Vec::new();
        let (start, first) = self.next()?;
        if first == Token::End {
            return Ok(Filter { predicates });
        }
        let mut token = (start, first);
        loop {
            if predicates.len() == MAX_PREDICATES {
                return Err(FilterError::new(
                    token.0,
                    format!("a filter joins at most {MAX_PREDICATES} predicates"),
                ));
            }
            predicates.push(self.predicate(token)?);
            match self.next()? {
                (_, Token::End) => return Ok(Filter { predicates }),
                (_, Token::Word(word)) if keyword(&word) == Some(Keyword::And) => {
                    token = self.next()?;
                }
                (position, other) => {
                    return Err(FilterError::new(
                        position,
                        format!(
                            "expected AND or the end of the filter, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }

    /// One predicate, starting with `token`.
    fn predicate(&mut self, token: (usize, Token)) -> Result<Predicate, FilterError> {
        let (position, first) = token;
        if let Token::Word(word) = &first {
            if keyword(word) == Some(Keyword::Not) {
                let token = self.next()?;
                let name = self.name(token)?;
                return match self.next()? {
                    (_, Token::Word(word)) if keyword(&word) == Some(Keyword::Exists) => {
                        Ok(Predicate::NotExists { name })
                    }
                    (position, other) => Err(FilterError::new(
                        position,
                        format!(
                            "expected EXISTS after NOT {name}, found {}",
                            other.describe()
                        ),
                    )),
                };
            }
        }
        let name = self.name((position, first))?;
        match self.next()? {
            (_, Token::Equals) => Ok(Predicate::Equals {
                value: self.value()?,
                name,
            }),
            (_, Token::NotEquals) => Ok(Predicate::NotEquals {
                value: self.value()?,
                name,
            }),
            (_, Token::Prefix) => Ok(Predicate::Prefix {
                prefix: self.value()?,
                name,
            }),
            (_, Token::Word(word)) if keyword(&word) == Some(Keyword::Exists) => {
                Ok(Predicate::Exists { name })
            }
            (_, Token::Word(word)) if keyword(&word) == Some(Keyword::In) => {
                let values = self.list()?;
                Ok(Predicate::In { name, values })
            }
            (position, other) => Err(FilterError::new(
                position,
                format!(
                    "expected =, !=, ^=, IN or EXISTS after the name {name}, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn name(&self, token: (usize, Token)) -> Result<ByteString, FilterError> {
        match token {
            (_, Token::QuotedName(name)) => Ok(name.into()),
            (position, Token::Word(word)) if keyword(&word).is_some() => Err(FilterError::new(
                position,
                format!("expected a header name, found the keyword {word} (quote a header called that: \"{word}\")"),
            )),
            (_, Token::Word(word)) => Ok(word.into()),
            (position, other) => Err(FilterError::new(
                position,
                format!("expected a header name, found {}", other.describe()),
            )),
        }
    }

    fn value(&mut self) -> Result<ByteString, FilterError> {
        match self.next()? {
            (_, Token::Value(value)) => Ok(value.into()),
            (position, other) => Err(FilterError::new(
                position,
                format!(
                    "expected a quoted value such as 'x', found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn list(&mut self) -> Result<Vec<ByteString>, FilterError> {
        match self.next()? {
            (_, Token::Open) => {}
            (position, other) => {
                return Err(FilterError::new(
                    position,
                    format!("expected `(` after IN, found {}", other.describe()),
                ))
            }
        }
        let mut values = Vec::new();
        loop {
            let (position, _) = self.peek_position();
            if values.len() == MAX_IN_VALUES {
                return Err(FilterError::new(
                    position,
                    format!("an IN list holds at most {MAX_IN_VALUES} values"),
                ));
            }
            values.push(self.value()?);
            match self.next()? {
                (_, Token::Comma) => {}
                (_, Token::Close) => return Ok(values),
                (position, other) => {
                    return Err(FilterError::new(
                        position,
                        format!(
                            "expected `,` or `)` in the IN list, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }

    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .len();
    }

    fn peek_position(&mut self) -> (usize, ()) {
        self.skip_whitespace();
        (self.at, ())
    }

    /// The next token and where it starts.
    fn next(&mut self) -> Result<(usize, Token), FilterError> {
        self.skip_whitespace();
        let start = self.at;
        let rest = &self.text[start..];
        let Some(first) = rest.chars().next() else {
            return Ok((start, Token::End));
        };
        let (token, length) = match first {
            '=' => (Token::Equals, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '!' if rest.starts_with("!=") => (Token::NotEquals, 2),
            '^' if rest.starts_with("^=") => (Token::Prefix, 2),
            '\'' => {
                let (text, length) = quoted(rest, '\'').ok_or_else(|| {
                    FilterError::new(start, "this value's quote is never closed")
                })?;
                (Token::Value(text), length)
            }
            '"' => {
                let (text, length) = quoted(rest, '"').ok_or_else(|| {
                    FilterError::new(start, "this name's quote is never closed")
                })?;
                if text.is_empty() {
                    return Err(FilterError::new(start, "a header name cannot be empty"));
                }
                (Token::QuotedName(text), length)
            }
            _ if is_bare_name_byte(first as u8) && first.is_ascii() => {
                let length = rest
                    .bytes()
                    .position(|byte| !is_bare_name_byte(byte))
                    .unwrap_or(rest.len());
                (Token::Word(rest[..length].to_owned()), length)
            }
            other => {
                return Err(FilterError::new(
                    start,
                    format!(
                        "unexpected character {other:?} (names are letters, digits and _-.:/, or \"quoted\"; values are 'quoted')"
                    ),
                ))
            }
        };
        self.at = start + length;
        Ok((start, token))
    }
}

/// A quoted string at the start of `text` (which starts with `quote`): its content
/// with doubled quotes undone, and the bytes it spans. `None` if it never closes.
fn quoted(text: &str, quote: char) -> Option<(String, usize)> {
    let mut content = String::new();
    let mut characters = text.char_indices().skip(1).peekable();
    while let Some((index, character)) = characters.next() {
        if character == quote {
            if characters.peek().is_some_and(|(_, next)| *next == quote) {
                characters.next();
                content.push(quote);
                continue;
            }
            return Some((content, index + quote.len_utf8()));
        }
        content.push(character);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Filter {
        Filter::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn error(text: &str) -> FilterError {
        Filter::parse(text).expect_err(text)
    }

    #[test]
    fn every_operator_parses() {
        let filter = parse(
            "profile_id = 'u1' and device_id != 'd''2' AND kind IN ('a', 'b') \
             AND path ^= '/x' AND trace EXISTS AND NOT \"debug flag\" EXISTS",
        );
        assert_eq!(
            filter.predicates(),
            [
                Predicate::Equals {
                    name: "profile_id".into(),
                    value: "u1".into()
                },
                Predicate::NotEquals {
                    name: "device_id".into(),
                    value: "d'2".into()
                },
                Predicate::In {
                    name: "kind".into(),
                    values: vec!["a".into(), "b".into()]
                },
                Predicate::Prefix {
                    name: "path".into(),
                    prefix: "/x".into()
                },
                Predicate::Exists {
                    name: "trace".into()
                },
                Predicate::NotExists {
                    name: "debug flag".into()
                },
            ]
        );
        assert!(parse("").is_empty());
        assert!(parse("  \t").is_empty());
    }

    #[test]
    fn the_canonical_text_parses_back_to_the_same_filter() {
        for text in [
            "a = 'x' AND \"and\" = 'it''s' AND b IN ('1') AND NOT c EXISTS AND d ^= 'é'",
            "\"a\"\"b\" != ''",
        ] {
            let filter = parse(text);
            assert_eq!(parse(&filter.to_string()), filter, "{filter}");
        }
    }

    #[test]
    fn errors_point_at_the_offending_byte() {
        assert_eq!(error("a = x").position, 4);
        assert_eq!(error("a = 'x' OR b = 'y'").position, 8);
        assert_eq!(error("a = 'x").position, 4);
        assert_eq!(error("a 'x'").position, 2);
        assert_eq!(error("a IN 'x'").position, 5);
        assert_eq!(error("a IN ('x' 'y')").position, 10);
        assert_eq!(error("NOT a").position, 5);
        assert_eq!(error("AND = 'x'").position, 0);
        assert_eq!(error("a = 'x' AND").position, 11);
        assert_eq!(error("a = 'x' # c").position, 8);
        assert!(error("a = x").to_string().contains("at byte 4"));
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("a = '{}'", "x".repeat(MAX_FILTER_BYTES));
        assert!(error(&long).message.contains("bytes long"));
        let many = vec!["a EXISTS"; MAX_PREDICATES + 1].join(" AND ");
        assert!(error(&many).message.contains("at most"));
        let values = vec!["'v'"; MAX_IN_VALUES + 1].join(",");
        assert!(error(&format!("a IN ({values})"))
            .message
            .contains("at most"));
        assert!(Filter::parse(&vec!["a EXISTS"; MAX_PREDICATES].join(" AND ")).is_ok());
    }

    #[test]
    fn repeated_headers_match_if_any_value_matches() {
        let headers = [("device", "d1"), ("device", "d2"), ("user", "u1")];
        assert!(parse("device = 'd2'").matches(headers));
        assert!(!parse("device != 'd2'").matches(headers));
        assert!(parse("device != 'd3'").matches(headers));
        assert!(
            parse("missing != 'x'").matches(headers),
            "absent headers are != anything"
        );
        assert!(parse("device IN ('x', 'd1')").matches(headers));
        assert!(parse("user ^= 'u'").matches(headers));
        assert!(parse("user EXISTS AND NOT other EXISTS").matches(headers));
        assert!(!parse("user = 'u1' AND device = 'd3'").matches(headers));
        assert!(Filter::all().matches(headers));
    }
}
