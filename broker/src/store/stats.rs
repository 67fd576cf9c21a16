//! The store's metrics: fsyncs and their latency, records per fsync, storage
//! errors by kind, recovery time. Per-queue bytes and segments on disk are read
//! from each queue's [`super::DiskGauges`] at scrape time.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// fsync latency buckets, seconds: 50 µs to 5 s.
const FSYNC_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

/// Kinds of storage error counted.
pub const ERROR_KINDS: [&str; 4] = ["write", "sync", "load", "reclaim"];

/// Counters and histograms of the store, in their own registry.
#[derive(Debug)]
pub struct StoreStats {
    registry: Registry,
    /// fsyncs of segment and marks files.
    pub fsyncs: Counter,
    /// Message records written.
    pub records: Counter,
    /// Writer batches that synced (each is one group commit).
    pub commits: Counter,
    /// Records written by the batches that synced: `records_committed / commits`
    /// is records per group commit.
    pub records_committed: Counter,
    /// Time of each batch's syncs.
    pub fsync_seconds: Histogram,
    /// Errors, by position in `ERROR_KINDS`.
    errors: Vec<Counter>,
    /// Seconds the last startup spent reading the store.
    pub recovery_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Messages recovered at the last startup.
    pub recovered_messages: Gauge,
}

impl Default for StoreStats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tern_store");
        let fsyncs = Counter::default();
        registry.register(
            "fsyncs",
            "fsyncs of queue segment and marks files",
            fsyncs.clone(),
        );
        let records = Counter::default();
        registry.register(
            "records_written",
            "Message records written to queue logs",
            records.clone(),
        );
        let commits = Counter::default();
        registry.register("group_commits", "Writer batches made durable by one round of fsyncs (STORE_FSYNC=always: each confirms every publish in it)", commits.clone());
        let records_committed = Counter::default();
        registry.register("records_committed", "Message records in the batches that were synced (divide by group_commits for records per fsync round)", records_committed.clone());
        let fsync_seconds = Histogram::new(FSYNC_BUCKETS);
        registry.register(
            "fsync_seconds",
            "Time to sync one writer batch",
            fsync_seconds.clone(),
        );
        let family = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "errors",
            "Storage errors, by kind: write, sync, load (a queue not loaded at startup), reclaim",
            family.clone(),
        );
        let errors = ERROR_KINDS
            .iter()
            .map(|kind| family.get_or_create_owned(&vec![("kind", *kind)]))
            .collect();
        let recovery_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "recovery_seconds",
            "Seconds the last startup spent reading queue logs",
            recovery_seconds.clone(),
        );
        let recovered_messages = Gauge::default();
        registry.register(
            "recovered_messages",
            "Messages read back from queue logs at the last startup",
            recovered_messages.clone(),
        );
        StoreStats {
            registry,
            fsyncs,
            records,
            commits,
            records_committed,
            fsync_seconds,
            errors,
            recovery_seconds,
            recovered_messages,
        }
    }
}

impl StoreStats {
    /// The registry, for the exporter.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts an error of `kind` (`write`, `sync`, `load` or `reclaim`).
    pub fn count_error(&self, kind: &str) {
        if let Some(index) = ERROR_KINDS.iter().position(|known| *known == kind) {
            self.errors[index].inc();
        }
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        ERROR_KINDS
            .iter()
            .position(|known| *known == kind)
            .map_or(0, |index| self.errors[index].get())
    }
}
