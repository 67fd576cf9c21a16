//! Where durable queues keep their messages: the storage seam, and the file log
//! behind it (`STORE_URL=file://…`). With `mem://` (the default) there is no store
//! and queues live in memory only.
//!
//! The seam is two traits. A [`Store`] recovers the queues it holds at startup,
//! creates a [`QueueJournal`] for each new queue, and confirms publishes once what
//! they wrote is as durable as `STORE_FSYNC` promises. A queue tells its journal
//! every change that matters after a restart: a message appended (with its id and
//! the fields queue policies need), settled (acked, discarded, purged), delivered
//! again; the queue itself is deleted. The queue keeps its messages in memory as
//! well (bounded by `QUEUE_MAX_BYTES` and `MEMORY_LIMIT`): the store is written,
//! and read only at startup.
//!
//! - this module — the seam: traits, errors, what recovery returns;
//! - `settings.rs` — `STORE_URL` and `STORE_FSYNC` as values;
//! - `confirm.rs` — a publish's PUBLISH_OK or PUBLISH_ERROR, sent once every
//!   queue it went to has it on disk;
//! - `file_store.rs` — the file store: directory, lock, recovery, journals;
//! - `writer.rs` — the one writer thread: batches, group commit, fsync policy;
//! - `queue_log.rs` — one queue's segments and marks, reclaim and compaction;
//! - `checkpoint.rs` — each segment's index, and reading a segment at startup
//!   from its last fully settled point;
//! - `record.rs` — record framing with CRC32C, and scanning files back;
//! - `disk.rs` — the file operations, behind a trait (`sim_disk.rs`: the test
//!   double that loses unsynced writes);
//! - `stats.rs` — the store's metrics.

mod checkpoint;
mod confirm;
pub mod disk;
mod file_store;
mod queue_log;
pub mod record;
mod settings;
#[cfg(test)]
pub mod sim_disk;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

pub use confirm::{OwedConfirms, PendingConfirm};
pub use file_store::FileStore;
pub use queue_log::DiskGauges;
pub use record::{Mark, MessageRecord};
pub use settings::{FsyncPolicy, StoreUrl};
pub use stats::StoreStats;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another broker holds the directory.
    #[error("{0} is locked by another running broker")]
    Locked(PathBuf),
    /// The queue's last write failed (a full or failing disk): publishes to it are
    /// refused until a write succeeds again.
    #[error("queue `{queue}` cannot store messages: its last write to disk failed ({reason}); it retries within a second")]
    Unavailable {
        /// The queue.
        queue: String,
        /// The error of the failed write.
        reason: String,
    },
    /// The store is closed (shutting down).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why one queue could not be loaded at startup (the others still are).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record inside the log is damaged (not a torn tail).
    #[error("{file} is damaged at offset {offset}: {what}; the queue was not loaded (move the directory away to start it afresh)")]
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What was found there.
        what: &'static str,
    },
    /// The queue's meta file is missing or unreadable.
    #[error("{file}: {reason}")]
    BadMeta {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl LoadError {
    fn io(file: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// A queue read back at startup.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// Its name.
    pub name: String,
    /// The pattern it is bound to.
    pub pattern: String,
    /// Its live messages (ready, or unacked when the broker stopped), in id order,
    /// each with the deliveries it had.
    pub messages: Vec<MessageRecord>,
    /// The id its next message gets.
    pub next_id: u64,
    /// Where its changes go from now on.
    pub journal: Arc<dyn QueueJournal>,
}

/// A queue that could not be loaded: it is left on disk untouched and reported on
/// `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedQueue {
    /// Its directory.
    pub dir: String,
    /// Its name, when the meta file could be read.
    pub name: Option<String>,
    /// Why.
    pub error: String,
}

/// What [`Store::recover`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The queues loaded.
    pub queues: Vec<RecoveredQueue>,
    /// The queues that could not be.
    pub failed: Vec<FailedQueue>,
    /// Whether the broker stopped cleanly last time. After a crash every recovered
    /// message is flagged redelivered (it may have been delivered before), since
    /// deliveries are recorded without waiting for the disk.
    pub clean: bool,
    /// How long reading took.
    pub took: Duration,
}

/// The storage behind durable queues.
pub trait Store: Send + Sync + fmt::Debug {
    /// For logs: what and where.
    fn describe(&self) -> String;
    /// Reads every queue back. Called once, before any queue is created.
    fn recover(&self) -> Result<Recovery, StoreError>;
    /// Starts the journal of a new queue; the queue is durable (it exists after a
    /// restart) once anything confirmed after this is.
    fn create_queue(&self, name: &str, pattern: &str) -> Result<Arc<dyn QueueJournal>, StoreError>;
    /// Resolves `confirm` (one hold) after everything handed to the store before
    /// it: keeps a connection's confirms in order when some wait for the disk.
    fn barrier(&self, confirm: &Arc<PendingConfirm>);
    /// True while more than the writer's buffer waits to be written: publishers
    /// should read nothing more until [`Store::wait_for_room`].
    fn backlogged(&self) -> bool;
    /// Waits until the writer's buffer is below its bound.
    fn wait_for_room(&self)
        -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
    /// Writes and syncs everything, marks a clean stop, and stops the writer.
    fn close(&self);
    /// Queues that could not be loaded, and queues whose writes are failing now.
    fn health(&self) -> StoreHealth;
    /// The store's metrics.
    fn stats(&self) -> &StoreStats;
}

/// The store's state for `/healthz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreHealth {
    /// `file:///…` or another URL.
    pub url: String,
    /// `STORE_FSYNC`.
    pub fsync: String,
    /// Queues left on disk unloaded at startup.
    pub failed_to_load: Vec<FailedQueue>,
    /// Queues whose last write failed.
    pub failing_writes: Vec<String>,
}

/// One queue's side of the store.
pub trait QueueJournal: Send + Sync + fmt::Debug {
    /// Appends a message; `confirm`, when given, is held until it is durable.
    /// Fails at once (nothing appended) while the queue's writes are failing.
    fn append(
        &self,
        record: MessageRecord,
        confirm: Option<&Arc<PendingConfirm>>,
    ) -> Result<(), StoreError>;
    /// Records a mark on a message (acks are batched, not waited for).
    fn mark(&self, id: u64, mark: Mark);
    /// Deletes the queue and everything it stored.
    fn delete(&self);
    /// Bytes and segments on disk.
    fn gauges(&self) -> &DiskGauges;
}
