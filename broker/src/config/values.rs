//! What a setting accepts: how its text becomes a value, and how to say what is
//! accepted when it does not.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

/// Why a setting's text was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The text does not parse.
    Unparsable,
    /// It parsed to this value, which is out of range.
    OutOfRange(String),
}

/// A kind of value a setting accepts.
pub trait Accepts {
    /// The value a setting of this kind holds.
    type Value;
    /// Parses and checks `text` (already trimmed).
    fn parse(&self, text: &str) -> Result<Self::Value, Rejected>;
    /// What is accepted, for error messages: "a whole number from 1 to 10".
    fn expected(&self) -> String;
}

/// What `accepts` accepts, for a setting of type `T` (fixes `T` where the
/// declaration alone would not).
pub fn describe<T, A: Accepts<Value = T>>(accepts: &A) -> String {
    accepts.expected()
}

/// Any `FromStr` value, described in words.
#[derive(Debug)]
pub struct Parsed<T>(pub &'static str, PhantomData<T>);

impl<T> Parsed<T> {
    /// Accepts what `T::from_str` accepts, described as `expected`.
    pub const fn new(expected: &'static str) -> Self {
        Parsed(expected, PhantomData)
    }
}

impl<T: FromStr> Accepts for Parsed<T> {
    type Value = T;

    fn parse(&self, text: &str) -> Result<T, Rejected> {
        text.parse().map_err(|_| Rejected::Unparsable)
    }

    fn expected(&self) -> String {
        self.0.to_owned()
    }
}

/// A number from `min` to `max` inclusive.
#[derive(Debug)]
pub struct Between<T> {
    min: T,
    max: T,
    what: &'static str,
}

impl<T> Between<T> {
    /// `what` ("a whole number") from `min` to `max`.
    pub const fn new(min: T, max: T, what: &'static str) -> Self {
        Between { min, max, what }
    }
}

impl<T: FromStr + PartialOrd + Display + Copy> Accepts for Between<T> {
    type Value = T;

    fn parse(&self, text: &str) -> Result<T, Rejected> {
        let value: T = text.parse().map_err(|_| Rejected::Unparsable)?;
        if value < self.min || value > self.max {
            return Err(Rejected::OutOfRange(value.to_string()));
        }
        Ok(value)
    }

    fn expected(&self) -> String {
        format!("{} from {} to {}", self.what, self.min, self.max)
    }
}

/// A duration given as a whole number of one unit (milliseconds, seconds), within
/// a range.
#[derive(Debug)]
pub struct Time {
    range: Between<u64>,
    unit: fn(u64) -> Duration,
}

impl Time {
    /// From `min` to `max` milliseconds.
    pub const fn millis(min: u64, max: u64) -> Self {
        Time {
            range: Between::new(min, max, "milliseconds"),
            unit: Duration::from_millis,
        }
    }

    /// From `min` to `max` seconds.
    pub const fn secs(min: u64, max: u64) -> Self {
        Time {
            range: Between::new(min, max, "seconds"),
            unit: Duration::from_secs,
        }
    }
}

impl Accepts for Time {
    type Value = Duration;

    fn parse(&self, text: &str) -> Result<Duration, Rejected> {
        self.range.parse(text).map(self.unit)
    }

    fn expected(&self) -> String {
        self.range.expected()
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// `MEMORY_LIMIT`: a share of the memory available to the process, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// This many percent (1 to 100) of the cgroup limit or physical memory.
    Percent(u8),
    /// Exactly this many bytes; 0 means no limit.
    Bytes(u64),
}

impl MemoryLimit {
    /// The limit in bytes (0: none), and how it was derived, for the startup log.
    pub fn resolve(self) -> (u64, String) {
        match self {
            MemoryLimit::Bytes(0) => (0, "no limit (MEMORY_LIMIT=0)".to_owned()),
            MemoryLimit::Bytes(bytes) => (bytes, "MEMORY_LIMIT bytes".to_owned()),
            MemoryLimit::Percent(percent) => match crate::memory::available_memory() {
                Some((available, source)) => (
                    available / 100 * u64::from(percent),
                    format!("{percent}% of the {source} ({available} bytes)"),
                ),
                None => (
                    0,
                    "no limit: the memory available could not be read".to_owned(),
                ),
            },
        }
    }
}

impl FromStr for MemoryLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(percent @ 1..=100) => Ok(MemoryLimit::Percent(percent)),
                _ => Err(format!(
                    "expected a percentage from 1% to 100%, got `{text}`"
                )),
            };
        }
        text.parse::<u64>().map(MemoryLimit::Bytes).map_err(|_| {
            format!("expected a percentage such as 60% or a number of bytes, got `{text}`")
        })
    }
}

/// A file path that may be unset (the empty default): the security files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionalPath(pub Option<std::path::PathBuf>);

impl FromStr for OptionalPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        Ok(OptionalPath(
            (!text.is_empty()).then(|| std::path::PathBuf::from(text)),
        ))
    }
}
