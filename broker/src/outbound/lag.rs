//! Lag accounting: broadcast messages dropped for a stalled subscriber are counted
//! per subscription, reported to the client in a LAGGED frame once per written batch,
//! counted in `tern_messages_dropped_total{reason="slow_consumer"}` when they happen,
//! and logged at most once per [`LAG_WARNING_INTERVAL`] per connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::warn;

use crate::clock::{self, Instant};

/// Messages dropped for one broadcast subscription since its last LAGGED report.
pub type MissedCounter = Arc<AtomicU64>;

/// Minimum time between two slow-consumer warnings for one connection.
const LAG_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// The missed-message counters of one connection's broadcast subscriptions.
#[derive(Debug)]
pub(super) struct LagTracker {
    watch: Mutex<Vec<(u32, MissedCounter)>>,
    /// A drop happened since the last report.
    has_lagged: AtomicBool,
    created: Instant,
    last_warning_ms: AtomicU64,
}

impl LagTracker {
    pub(super) fn new() -> Self {
        LagTracker {
            watch: Mutex::new(Vec::new()),
            has_lagged: AtomicBool::new(false),
            created: clock::now(),
            last_warning_ms: AtomicU64::new(0),
        }
    }

    fn lock_watch(&self) -> MutexGuard<'_, Vec<(u32, MissedCounter)>> {
        self.watch
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers a subscription's counter, so its gaps are reported.
    pub(super) fn watch(&self, sid: u32, missed: MissedCounter) {
        self.lock_watch().push((sid, missed));
    }

    /// Forgets a subscription's counter (it ended).
    pub(super) fn unwatch(&self, sid: u32) {
        let mut watch = self.lock_watch();
        if let Some(index) = watch.iter().position(|(watched, _)| *watched == sid) {
            watch.swap_remove(index);
        }
    }

    /// Whether a drop happened since the last report.
    pub(super) fn has_lagged(&self) -> bool {
        self.has_lagged.load(Ordering::Acquire)
    }

    /// Counts one dropped message for subscription `sid`. Costs two atomics; returns
    /// `true` only when a new gap starts (the writer must then be woken to report
    /// it), and only then reads the clock for the rate-limited warning, so an
    /// overloaded broker spends its time on deliveries, not on bookkeeping for drops.
    pub(super) fn record_drop(
        &self,
        connection_id: u64,
        buffer: usize,
        sid: u32,
        missed: &AtomicU64,
    ) -> bool {
        missed.fetch_add(1, Ordering::AcqRel);
        if self.has_lagged.swap(true, Ordering::AcqRel) {
            return false;
        }
        let now_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let interval = LAG_WARNING_INTERVAL.as_millis() as u64;
        if (last == 0 || now_ms.saturating_sub(last) >= interval)
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                connection = connection_id,
                subscription = sid,
                buffer,
                "slow consumer: outbound buffer full, dropping broadcast messages for it"
            );
        }
        true
    }

    /// Takes the counts of messages dropped per subscription since the last report.
    pub(super) fn take_reports(&self) -> Vec<(u32, u64)> {
        if !self.has_lagged.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.lock_watch()
            .iter()
            .filter_map(|(sid, missed)| {
                let count = missed.swap(0, Ordering::AcqRel);
                (count > 0).then_some((*sid, count))
            })
            .collect()
    }
}
