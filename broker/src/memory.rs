//! The broker-wide bound on queued messages, `MEMORY_LIMIT`: per-queue limits
//! multiply (`MAX_QUEUES × QUEUE_MAX_BYTES` is hundreds of GiB), this one does not.
//!
//! Every message a queue stores is charged its encoded size (subject, reply-to,
//! headers, payload) plus [`BOOKKEEPING_BYTES`], from publish until it is acked,
//! discarded, purged or deleted with its queue. At the limit, publishes that a queue
//! would store are refused (`MEMORY_LIMIT`) until the charge falls below
//! [`LOW_WATER_PERCENT`] of it; acks and consumers are never refused, so queues can
//! always drain (no deadlock for a connection that both publishes and consumes).
//! Broadcast deliveries are not charged: each connection's buffer has its own bound
//! (`CONSUMER_CHANNEL_BUFFER_BYTES`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tern_proto::Message;

/// Charged per queued message on top of its encoded size: its `Arc`, its slot in the
/// queue and its unacked-map entry, roughly.
pub const BOOKKEEPING_BYTES: u64 = 64;

/// Once refusing, publishing resumes when the charge falls below this share of the
/// limit.
pub const LOW_WATER_PERCENT: u64 = 90;

/// What one queued message is charged.
pub fn charge(message: &Message) -> u64 {
    message.encoded().len() as u64 + BOOKKEEPING_BYTES
}

/// The charge of every queued message against the limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    /// 0: no limit.
    limit: u64,
    low_water: u64,
    refusing: AtomicBool,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0: no limit, only counting).
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            used: AtomicU64::new(0),
            limit,
            low_water: limit / 100 * LOW_WATER_PERCENT,
            refusing: AtomicBool::new(false),
        }
    }

    /// Charges `bytes`, or refuses (charging nothing) at the limit and until the
    /// charge has fallen below the low watermark.
    pub fn try_charge(&self, bytes: u64) -> bool {
        if self.try_charge_all(bytes) {
            return true;
        }
        if !self.refusing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                limit = self.limit,
                queued = self.used(),
                "MEMORY_LIMIT reached: publishes to queues are refused until they drain"
            );
        }
        false
    }

    /// Charges `bytes` when they fit below the limit, else charges nothing and
    /// changes nothing: a caller charging a batch at once then goes message by
    /// message ([`MemoryBudget::try_charge`]), so the limit falls where it would.
    pub fn try_charge_all(&self, bytes: u64) -> bool {
        if self.limit == 0 {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            return true;
        }
        if self.refusing.load(Ordering::Acquire) {
            return false;
        }
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Charges `bytes` whatever the limit (messages recovered at startup were
    /// confirmed and are kept); at or past the limit, publishes are refused.
    pub fn force_charge(&self, bytes: u64) {
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if self.limit != 0 && now > self.limit && !self.refusing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                limit = self.limit,
                queued = now,
                "messages recovered from the store exceed MEMORY_LIMIT: publishes to queues are refused until they drain"
            );
        }
    }

    /// Gives back what a message that left its queue was charged.
    pub fn release(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        let now = before.saturating_sub(bytes);
        if self.refusing.load(Ordering::Acquire)
            && now < self.low_water
            && self.refusing.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                limit = self.limit,
                queued = now,
                "queued messages below the low watermark: publishes to queues accepted again"
            );
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit (0: none).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether publishes to queues are being refused.
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }
}

/// The memory this process may use: the smaller of its cgroup limit (v2
/// `memory.max`, or v1 `memory.limit_in_bytes`) and physical memory, with where the
/// figure came from. `None` when neither can be read.
pub fn available_memory() -> Option<(u64, &'static str)> {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text))
        .map(|bytes| (bytes, "physical memory"));
    let cgroup = read_limit("/sys/fs/cgroup/memory.max")
        .or_else(|| read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .map(|bytes| (bytes, "cgroup memory limit"));
    match (cgroup, physical) {
        (Some(cgroup), Some(physical)) if cgroup.0 < physical.0 => Some(cgroup),
        (_, Some(physical)) => Some(physical),
        (cgroup, None) => cgroup,
    }
}

/// A cgroup limit file: a number of bytes, or `max` / a huge value for none.
fn read_limit(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let bytes: u64 = text.trim().parse().ok()?;
    // cgroup v1 reports "no limit" as a page-rounded i64::MAX.
    (bytes < 1 << 60).then_some(bytes)
}

/// `MemTotal:  24576000 kB` → bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kilobytes.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_refuses_until_the_low_watermark() {
        let budget = MemoryBudget::new(1000);
        assert!(budget.try_charge(600));
        assert!(budget.try_charge(400));
        assert!(!budget.try_charge(1), "at the limit");
        assert!(budget.is_refusing());
        budget.release(50);
        assert!(!budget.try_charge(1), "950 is above the 900 low watermark");
        budget.release(100);
        assert!(!budget.is_refusing(), "850 is below it");
        assert!(budget.try_charge(100));
        assert_eq!(budget.used(), 950);
    }

    #[test]
    fn a_batch_that_does_not_fit_charges_nothing_and_leaves_the_limit_to_messages() {
        let budget = MemoryBudget::new(1000);
        assert!(budget.try_charge_all(700));
        assert!(!budget.try_charge_all(400), "the batch does not fit");
        assert_eq!(budget.used(), 700, "nothing charged");
        assert!(
            !budget.is_refusing(),
            "its messages may still fit one by one"
        );
        assert!(budget.try_charge(300));
        assert!(!budget.try_charge(100));
        assert!(
            !budget.try_charge_all(1),
            "refusing until the low watermark"
        );
    }

    #[test]
    fn no_limit_only_counts() {
        let budget = MemoryBudget::new(0);
        assert!(budget.try_charge(u64::MAX / 2));
        assert!(!budget.is_refusing());
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert!(available_memory().is_some_and(|(bytes, _)| bytes > 0));
    }
}
