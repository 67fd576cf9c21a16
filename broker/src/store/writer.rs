//! The store's one writer thread. Queues hand it operations through an inbox (a
//! mutex-guarded vector: pushing is one short lock, under the queue's own lock, so
//! a queue's operations arrive in its order); the thread takes the whole inbox at
//! once, writes it, syncs per `STORE_FSYNC`, and only then answers the confirms in
//! it. Whatever arrives while it syncs forms the next batch: one fsync round per
//! batch, however many publishes share it (group commit). No disk I/O happens on
//! the async worker threads or under a queue's lock.
//!
//! Bounded: when more than [`INBOX_LIMIT_BYTES`] of records wait, publishers stop
//! reading (see [`Shared::backlogged`]) until the writer has taken them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tern_proto::ErrorCode;
use tracing::{error, warn};

use super::disk::Disk;
use super::queue_log::{DiskGauges, QueueLog};
use super::record::{Mark, MessageRecord};
use super::{FsyncPolicy, PendingConfirm, StoreStats};

/// Record bytes waiting for the writer past which publishers pause.
pub const INBOX_LIMIT_BYTES: usize = 64 << 20;
/// How often the writer retries failed queues, reclaims idle segments and compacts.
const TICK: Duration = Duration::from_secs(1);

/// One thing for the writer to do.
#[derive(Debug)]
pub(super) enum Op {
    /// A new queue: make its directory and meta file.
    Create {
        key: u64,
        dir: PathBuf,
        meta: Vec<u8>,
        gauges: Arc<DiskGauges>,
    },
    /// A message.
    Append {
        key: u64,
        record: MessageRecord,
        confirm: Option<Arc<PendingConfirm>>,
    },
    /// A mark on a message.
    Mark { key: u64, id: u64, mark: Mark },
    /// The queue is gone.
    Delete { key: u64 },
    /// Answer this after everything before it.
    Barrier { confirm: Arc<PendingConfirm> },
    /// Do the once-a-second upkeep now (retry, reclaim, compact).
    Maintain,
}

#[derive(Debug, Default)]
struct Inbox {
    ops: Vec<Op>,
    bytes: usize,
    closed: bool,
}

/// What the queues and the writer share.
#[derive(Debug)]
pub(super) struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    backlogged: AtomicBool,
    pub(super) room: tokio::sync::Notify,
    pub(super) stats: Arc<StoreStats>,
    /// Queues whose last write failed, by key: name and error.
    pub(super) failing: Mutex<BTreeMap<u64, (String, String)>>,
}

impl Shared {
    pub(super) fn new(stats: Arc<StoreStats>) -> Self {
        Shared {
            inbox: Mutex::new(Inbox::default()),
            wake: Condvar::new(),
            backlogged: AtomicBool::new(false),
            room: tokio::sync::Notify::new(),
            stats,
            failing: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues whose last write failed, by key: name and error.
    pub(super) fn failing(&self) -> MutexGuard<'_, BTreeMap<u64, (String, String)>> {
        self.failing
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Hands an operation to the writer. Returns false once the store is closed.
    pub(super) fn push(&self, op: Op) -> bool {
        let bytes = match &op {
            Op::Append { record, .. } => record.message.encoded().len() + 64,
            _ => 16,
        };
        let mut inbox = self.lock();
        if inbox.closed {
            return false;
        }
        let was_empty = inbox.ops.is_empty();
        inbox.ops.push(op);
        inbox.bytes += bytes;
        if inbox.bytes > INBOX_LIMIT_BYTES {
            self.backlogged.store(true, Ordering::Release);
        }
        drop(inbox);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// True while more than [`INBOX_LIMIT_BYTES`] wait to be written.
    pub(super) fn backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Acquire)
    }

    /// Stops taking operations; the writer finishes what it has and exits.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits for operations (or `timeout`); takes them all.
    fn take(&self, timeout: Duration, spare: &mut Vec<Op>) -> bool {
        let mut inbox = self.lock();
        if inbox.ops.is_empty() && !inbox.closed {
            inbox = self
                .wake
                .wait_timeout(inbox, timeout)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poison| poison.into_inner().0);
        }
        std::mem::swap(&mut inbox.ops, spare);
        inbox.bytes = 0;
        let closed = inbox.closed;
        drop(inbox);
        if self.backlogged.swap(false, Ordering::AcqRel) {
            self.room.notify_waiters();
        }
        closed
    }
}

/// The writer thread's state.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) disk: Arc<dyn Disk>,
    pub(super) root: PathBuf,
    pub(super) policy: FsyncPolicy,
    pub(super) segment_bytes: u64,
    pub(super) logs: FxHashMap<u64, QueueLog>,
    pub(super) names: FxHashMap<u64, String>,
    /// Keys in `shared.failing`: cleared by their next good write.
    failing_keys: FxHashSet<u64>,
    /// Queues whose directory or meta file could not be written, with the meta:
    /// retried every tick; their appends are refused meanwhile.
    uncreated: FxHashMap<u64, Vec<u8>>,
    last_sync: Instant,
    last_tick: Instant,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        disk: Arc<dyn Disk>,
        root: PathBuf,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Self {
        Writer {
            shared,
            disk,
            root,
            policy,
            segment_bytes,
            logs: FxHashMap::default(),
            names: FxHashMap::default(),
            failing_keys: FxHashSet::default(),
            uncreated: FxHashMap::default(),
            last_sync: Instant::now(),
            last_tick: Instant::now(),
        }
    }

    /// Runs until the store is closed and everything is written and synced.
    pub(super) fn run(mut self) {
        let mut ops = Vec::new();
        loop {
            let timeout = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            let closed = self.shared.take(timeout, &mut ops);
            if !ops.is_empty() {
                self.write_batch(&mut ops);
            }
            let now = Instant::now();
            if let FsyncPolicy::Interval(every) = self.policy {
                if now.duration_since(self.last_sync) >= every {
                    self.sync_all();
                }
            }
            if now.duration_since(self.last_tick) >= TICK {
                self.tick(now);
            }
            if closed {
                let mut rest = Vec::new();
                self.shared.take(Duration::ZERO, &mut rest);
                if !rest.is_empty() {
                    self.write_batch(&mut rest);
                }
                self.sync_all();
                if let Err(error) = self
                    .disk
                    .write_atomic(&self.root.join(super::file_store::CLEAN_MARK), b"")
                {
                    warn!(%error, "could not mark the store's clean stop");
                }
                return;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let tick = self.last_tick + TICK;
        match self.policy {
            FsyncPolicy::Interval(every) => tick.min(self.last_sync + every),
            _ => tick,
        }
    }

    /// Writes one batch, syncs it per the policy, answers its confirms.
    fn write_batch(&mut self, ops: &mut Vec<Op>) {
        let mut confirms: Vec<(Option<u64>, Arc<PendingConfirm>)> = Vec::new();
        let mut appended: FxHashMap<u64, Vec<u64>> = FxHashMap::default();
        let mut touched: Vec<u64> = Vec::new();
        let mut records = 0u64;
        let mut maintain = false;
        for op in ops.drain(..) {
            match op {
                Op::Create {
                    key,
                    dir,
                    meta,
                    gauges,
                } => self.create(key, dir, &meta, gauges),
                Op::Append {
                    key,
                    record,
                    confirm,
                } => {
                    let Some(log) = self.logs.get_mut(&key) else {
                        if let Some(confirm) = confirm {
                            confirm.fail(
                                ErrorCode::StorageFailed,
                                "the queue was deleted before its message was stored",
                            );
                            confirm.release();
                        }
                        continue;
                    };
                    log.append(&record);
                    records += 1;
                    appended.entry(key).or_default().push(record.id);
                    if touched.last() != Some(&key) && !touched.contains(&key) {
                        touched.push(key);
                    }
                    if let Some(confirm) = confirm {
                        confirms.push((Some(key), confirm));
                    }
                }
                Op::Mark { key, id, mark } => {
                    if let Some(log) = self.logs.get_mut(&key) {
                        log.mark(id, mark);
                        if !touched.contains(&key) {
                            touched.push(key);
                        }
                    }
                }
                Op::Delete { key } => self.delete(key),
                Op::Barrier { confirm } => confirms.push((None, confirm)),
                Op::Maintain => maintain = true,
            }
        }
        let sync = self.policy == FsyncPolicy::Always;
        let started = Instant::now();
        let mut syncs = 0;
        let mut failed: FxHashSet<u64> = FxHashSet::default();
        for key in &touched {
            let Some(log) = self.logs.get_mut(key) else {
                continue;
            };
            match log.flush(self.disk.as_ref(), sync) {
                Ok(flushed) => {
                    syncs += flushed.syncs;
                    if self.failing_keys.remove(key) {
                        self.shared.failing().remove(key);
                    }
                }
                Err(io_error) => {
                    self.failing_keys.insert(*key);
                    let name = self.names.get(key).cloned().unwrap_or_default();
                    error!(queue = %name, error = %io_error, "queue write failed: its publishes in this batch are refused");
                    self.shared.stats.count_error("write");
                    log.forget_failed(appended.get(key).map_or(&[][..], Vec::as_slice));
                    log.gauges.failed.store(true, Ordering::Release);
                    self.shared
                        .failing()
                        .insert(*key, (name, io_error.to_string()));
                    failed.insert(*key);
                }
            }
        }
        self.shared.stats.records.inc_by(records);
        if syncs > 0 {
            self.shared.stats.fsyncs.inc_by(syncs);
            self.shared.stats.commits.inc();
            self.shared.stats.records_committed.inc_by(records);
            self.shared
                .stats
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            self.last_sync = Instant::now();
        }
        for (key, confirm) in confirms {
            if let Some(key) = key.filter(|key| failed.contains(key)) {
                let reason = self
                    .shared
                    .failing()
                    .get(&key)
                    .map(|(name, error)| {
                        format!("queue `{name}` could not store the message: {error}")
                    })
                    .unwrap_or_default();
                confirm.fail(ErrorCode::StorageFailed, reason);
            }
            confirm.release();
        }
        let now = Instant::now();
        for key in touched {
            if let Some(log) = self.logs.get_mut(&key) {
                if let Err(error) = log.reclaim(self.disk.as_ref(), now) {
                    warn!(%error, "could not delete a settled segment");
                    self.shared.stats.count_error("reclaim");
                }
            }
        }
        if maintain {
            self.tick(now);
        }
    }

    fn make_dir(&self, dir: &std::path::Path, meta: &[u8]) -> std::io::Result<()> {
        self.disk
            .create_dir_all(dir)
            .and_then(|()| {
                self.disk
                    .write_atomic(&dir.join(super::file_store::META_FILE), meta)
            })
            .and_then(|()| self.disk.sync_dir(&self.root))
    }

    fn create(&mut self, key: u64, dir: PathBuf, meta: &[u8], gauges: Arc<DiskGauges>) {
        let result = self.make_dir(&dir, meta);
        let name = super::file_store::meta_name(meta).unwrap_or_default();
        if let Err(io_error) = result {
            self.uncreated.insert(key, meta.to_vec());
            error!(queue = %name, error = %io_error, "could not create the queue's directory");
            self.failing_keys.insert(key);
            self.shared.stats.count_error("write");
            gauges.failed.store(true, Ordering::Release);
            self.shared
                .failing()
                .insert(key, (name.clone(), io_error.to_string()));
        }
        self.names.insert(key, name);
        self.logs
            .insert(key, QueueLog::new(dir, self.segment_bytes, gauges));
    }

    /// Adds a queue read back at startup.
    pub(super) fn adopt(&mut self, key: u64, name: String, log: QueueLog) {
        self.names.insert(key, name);
        self.logs.insert(key, log);
    }

    fn delete(&mut self, key: u64) {
        let Some(log) = self.logs.remove(&key) else {
            return;
        };
        self.names.remove(&key);
        self.failing_keys.remove(&key);
        self.uncreated.remove(&key);
        self.shared.failing().remove(&key);
        // Renamed first, so a crash midway never leaves half a queue to load.
        let doomed = self
            .root
            .join(format!("{}{key}", super::file_store::DELETED_PREFIX));
        let result = self
            .disk
            .rename(&log.dir, &doomed)
            .and_then(|()| self.disk.sync_dir(&self.root))
            .and_then(|()| self.disk.remove_dir_all(&doomed));
        if let Err(error) = result {
            warn!(%error, dir = %log.dir.display(), "could not remove a deleted queue's files");
            self.shared.stats.count_error("reclaim");
        }
    }

    /// Syncs everything written and not yet synced.
    fn sync_all(&mut self) {
        let started = Instant::now();
        let mut syncs = 0;
        for (key, log) in &mut self.logs {
            match log.flush(self.disk.as_ref(), true) {
                Ok(flushed) => syncs += flushed.syncs,
                Err(error) => {
                    warn!(queue = ?self.names.get(key), %error, "queue sync failed");
                    self.shared.stats.count_error("sync");
                }
            }
        }
        if syncs > 0 {
            self.shared.stats.fsyncs.inc_by(syncs);
            self.shared
                .stats
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.last_sync = Instant::now();
    }

    /// Once a second: failed queues may try again, idle segments are reclaimed and
    /// closed, and one mostly settled segment is compacted.
    fn tick(&mut self, now: Instant) {
        self.last_tick = now;
        // Publishes are accepted again; the next write tells whether the disk is
        // back (the queue stays listed as failing until one succeeds).
        let uncreated: Vec<(u64, Vec<u8>)> = self
            .uncreated
            .iter()
            .map(|(key, meta)| (*key, meta.clone()))
            .collect();
        for (key, meta) in uncreated {
            let Some(dir) = self.logs.get(&key).map(|log| log.dir.clone()) else {
                continue;
            };
            if self.make_dir(&dir, &meta).is_ok() {
                self.uncreated.remove(&key);
            }
        }
        for key in &self.failing_keys {
            if let Some(log) = self.logs.get(key) {
                if !self.uncreated.contains_key(key) {
                    log.gauges.failed.store(false, Ordering::Release);
                }
            }
        }
        let mut compacted = false;
        for log in self.logs.values_mut() {
            if let Err(error) = log.reclaim(self.disk.as_ref(), now) {
                warn!(%error, "could not delete a settled segment");
                self.shared.stats.count_error("reclaim");
            }
            log.close_idle(now);
            if !compacted {
                match log.compact_one(self.disk.as_ref()) {
                    Ok(done) => compacted = done,
                    Err(error) => {
                        warn!(%error, dir = %log.dir.display(), "could not compact a segment");
                        self.shared.stats.count_error("reclaim");
                    }
                }
            }
        }
    }
}
