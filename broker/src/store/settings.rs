//! `STORE_URL` and `STORE_FSYNC` as values.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// `STORE_URL`: where queues live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `mem://`: in memory only; nothing is written.
    Memory,
    /// `file:///path` or `file://./relative`: a directory of queue logs.
    File(PathBuf),
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "mem://" || text == "mem:" || text == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(
                    "file:// needs a directory, such as file:///var/lib/tern or file://./data"
                        .into(),
                );
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            return Err("redis:// is not supported yet (it is reserved for running several brokers on Redis); use mem:// or file://".into());
        }
        Err(format!("expected mem:// or file://DIRECTORY, got `{text}`"))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => formatter.write_str("mem://"),
            StoreUrl::File(path) => write!(formatter, "file://{}", path.display()),
        }
    }
}

/// `STORE_FSYNC`: when a write counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Confirm after fsync; concurrent writes share one fsync (group commit).
    Always,
    /// Confirm after write; fsync every so often.
    Interval(Duration),
    /// Confirm after write; never fsync (the OS decides), except at a clean stop.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        if let Some(millis) = text.strip_prefix("interval:") {
            return match millis.trim().parse::<u64>() {
                Ok(millis @ 1..=60_000) => Ok(FsyncPolicy::Interval(Duration::from_millis(millis))),
                _ => Err(format!(
                    "expected interval:<ms> with 1 to 60000 ms, got `{text}`"
                )),
            };
        }
        Err(format!(
            "expected always, interval:<ms> or never, got `{text}`"
        ))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => formatter.write_str("always"),
            FsyncPolicy::Interval(every) => write!(formatter, "interval:{}", every.as_millis()),
            FsyncPolicy::Never => formatter.write_str("never"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_policies_parse_and_print_back() {
        for text in ["mem://", "file:///var/lib/tern", "file://./data"] {
            let url: StoreUrl = text.parse().expect("valid");
            assert_eq!(url.to_string(), text);
        }
        assert_eq!("file://./data".parse(), Ok(StoreUrl::File("./data".into())));
        for bad in ["", "file://", "s3://bucket", "redis://localhost"] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
        for text in ["always", "never", "interval:200"] {
            let policy: FsyncPolicy = text.parse().expect("valid");
            assert_eq!(policy.to_string(), text);
        }
        for bad in ["sometimes", "interval:", "interval:0", "interval:x"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
    }
}
