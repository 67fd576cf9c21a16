//! The file store (`STORE_URL=file://DIR`): one directory per queue under `DIR`,
//! a lock so two brokers never share it, recovery at startup, and a journal per
//! queue that hands its operations to the writer thread.
//!
//! Layout: `DIR/LOCK` (held while the broker runs), `DIR/clean` (present only
//! after a clean stop), `DIR/q-<key>/` per queue (see `queue_log.rs`), and
//! `DIR/deleted-<key>/` while a deleted queue's files are removed.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::disk::{Disk, FsDisk};
use super::queue_log::{DiskGauges, QueueLog};
use super::writer::{Op, Shared, Writer};
use super::{
    FailedQueue, FsyncPolicy, LoadError, Mark, MessageRecord, PendingConfirm, QueueJournal,
    RecoveredQueue, Recovery, Store, StoreError, StoreHealth, StoreStats,
};

/// A queue's name and pattern.
pub(super) const META_FILE: &str = "queue.meta";
/// Present after a clean stop.
pub(super) const CLEAN_MARK: &str = "clean";
/// Prefix of a deleted queue's directory while it is removed.
pub(super) const DELETED_PREFIX: &str = "deleted-";
/// Prefix of a queue's directory.
const QUEUE_PREFIX: &str = "q-";
/// Locked while a broker uses the directory.
const LOCK_FILE: &str = "LOCK";

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    name: String,
    pattern: String,
}

/// The name in a meta file's bytes.
pub(super) fn meta_name(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Meta>(bytes)
        .ok()
        .map(|meta| meta.name)
}

/// A queue read from its directory: meta, log, live messages, gauges.
type LoadedQueue = (Meta, QueueLog, Vec<MessageRecord>, Arc<DiskGauges>);

/// Queue logs in a directory.
#[derive(Debug)]
pub struct FileStore {
    shared: Arc<Shared>,
    disk: Arc<dyn Disk>,
    root: PathBuf,
    policy: FsyncPolicy,
    segment_bytes: u64,
    next_key: AtomicU64,
    /// The writer, until recovery has handed it the loaded queues and started it.
    writer: Mutex<Option<Writer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    failed_to_load: Mutex<Vec<FailedQueue>>,
    stats: Arc<StoreStats>,
    /// The lock on `DIR/LOCK`, held for the store's life.
    _lock: Option<File>,
}

impl FileStore {
    /// Opens `root` on the real file system: creates it if missing and locks it.
    /// Fails if it cannot be created or written, or another broker holds it.
    pub fn open(root: &Path, policy: FsyncPolicy, segment_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|error| StoreError::io(root, error))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| StoreError::io(&lock_path, error))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(root.to_path_buf())),
            Err(TryLockError::Error(error)) => return Err(StoreError::io(&lock_path, error)),
        }
        // Writable? (A read-only mount lets the lock file be opened if it exists.)
        let probe = root.join(".probe");
        FsDisk
            .write_atomic(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|error| StoreError::io(&probe, error))?;
        let mut store =
            FileStore::open_on(Arc::new(FsDisk), root.to_path_buf(), policy, segment_bytes);
        store._lock = Some(lock);
        Ok(store)
    }

    /// A store in `root` on `disk` (no lock: for the storage double).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        root: PathBuf,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Self {
        let stats = Arc::new(StoreStats::default());
        let shared = Arc::new(Shared::new(stats.clone()));
        let writer = Writer::new(
            shared.clone(),
            disk.clone(),
            root.clone(),
            policy,
            segment_bytes,
        );
        FileStore {
            shared,
            disk,
            root,
            policy,
            segment_bytes,
            next_key: AtomicU64::new(1),
            writer: Mutex::new(Some(writer)),
            thread: Mutex::new(None),
            failed_to_load: Mutex::new(Vec::new()),
            stats,
            _lock: None,
        }
    }

    /// Asks the writer for its once-a-second upkeep now: queues whose writes
    /// failed may try again, settled segments are deleted, one is compacted.
    pub fn maintain_now(&self) {
        self.shared.push(Op::Maintain);
    }

    fn journal(&self, key: u64, name: &str, gauges: Arc<DiskGauges>) -> Arc<dyn QueueJournal> {
        Arc::new(FileJournal {
            key,
            name: name.to_owned(),
            shared: self.shared.clone(),
            gauges,
        })
    }

    /// A queue directory with no meta file and no segment: its creation was cut.
    fn never_created(&self, dir: &Path) -> bool {
        self.disk.list(dir).is_ok_and(|names| {
            !names
                .iter()
                .any(|name| name == META_FILE || name.ends_with(".log"))
        })
    }

    fn load_queue(&self, dir: PathBuf) -> Result<LoadedQueue, (Option<String>, LoadError)> {
        let meta_path = dir.join(META_FILE);
        let bytes = self
            .disk
            .read(&meta_path)
            .map_err(|error| (None, LoadError::io(&meta_path, error)))?;
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|error| {
            (
                None,
                LoadError::BadMeta {
                    file: meta_path.clone(),
                    reason: error.to_string(),
                },
            )
        })?;
        let gauges = Arc::new(DiskGauges::default());
        let (log, messages) =
            QueueLog::load(self.disk.as_ref(), dir, self.segment_bytes, gauges.clone())
                .map_err(|error| (Some(meta.name.clone()), error))?;
        Ok((meta, log, messages, gauges))
    }
}

impl Store for FileStore {
    fn describe(&self) -> String {
        format!(
            "file://{} (STORE_FSYNC={})",
            self.root.display(),
            self.policy
        )
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let started = Instant::now();
        let Some(mut writer) = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
        else {
            return Err(StoreError::Closed);
        };
        let disk = self.disk.as_ref();
        disk.create_dir_all(&self.root)
            .and_then(|()| match self.root.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => disk.sync_dir(parent),
                _ => Ok(()),
            })
            .map_err(|error| StoreError::io(&self.root, error))?;
        let names = disk
            .list(&self.root)
            .map_err(|error| StoreError::io(&self.root, error))?;
        let clean = names.iter().any(|name| name == CLEAN_MARK);
        if clean {
            let mark = self.root.join(CLEAN_MARK);
            disk.remove_file(&mark)
                .and_then(|()| disk.sync_dir(&self.root))
                .map_err(|error| StoreError::io(&mark, error))?;
        }
        let mut recovery = Recovery {
            clean,
            ..Recovery::default()
        };
        let mut max_key = 0;
        let mut seen = std::collections::HashSet::new();
        for name in &names {
            let path = self.root.join(name);
            if name.starts_with(DELETED_PREFIX) {
                disk.remove_dir_all(&path)
                    .map_err(|error| StoreError::io(&path, error))?;
                continue;
            }
            let Some(key) = name
                .strip_prefix(QUEUE_PREFIX)
                .and_then(|key| key.parse::<u64>().ok())
            else {
                continue;
            };
            max_key = max_key.max(key);
            if self.never_created(&path) {
                // Its creation did not complete (no meta file, no log): nothing
                // of it was ever confirmed.
                tracing::warn!(dir = %path.display(), "removing a queue directory whose creation did not complete");
                disk.remove_dir_all(&path)
                    .map_err(|error| StoreError::io(&path, error))?;
                continue;
            }
            match self.load_queue(path.clone()) {
                Ok((meta, log, messages, _)) if !seen.insert(meta.name.clone()) => {
                    drop((log, messages));
                    recovery.failed.push(FailedQueue {
                        dir: path.display().to_string(),
                        name: Some(meta.name),
                        error: "another directory holds a queue of this name".into(),
                    });
                }
                Ok((meta, log, messages, gauges)) => {
                    let next_id = log.next_id();
                    writer.adopt(key, meta.name.clone(), log);
                    recovery.queues.push(RecoveredQueue {
                        journal: self.journal(key, &meta.name, gauges),
                        name: meta.name,
                        pattern: meta.pattern,
                        messages,
                        next_id,
                    });
                }
                Err((queue, error)) => {
                    tracing::error!(dir = %path.display(), queue = ?queue, %error, "queue not loaded");
                    self.stats.count_error("load");
                    recovery.failed.push(FailedQueue {
                        dir: path.display().to_string(),
                        name: queue,
                        error: error.to_string(),
                    });
                }
            }
        }
        self.next_key.store(max_key + 1, Ordering::Relaxed);
        *self
            .failed_to_load
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = recovery.failed.clone();
        let thread = std::thread::Builder::new()
            .name("tern-store".into())
            .spawn(move || writer.run())
            .map_err(|error| StoreError::io(&self.root, error))?;
        *self
            .thread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(thread);
        recovery.took = started.elapsed();
        let messages: usize = recovery
            .queues
            .iter()
            .map(|queue| queue.messages.len())
            .sum();
        self.stats.recovery_seconds.set(recovery.took.as_secs_f64());
        self.stats.recovered_messages.set(messages as i64);
        Ok(recovery)
    }

    fn create_queue(&self, name: &str, pattern: &str) -> Result<Arc<dyn QueueJournal>, StoreError> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let meta = serde_json::to_vec(&Meta {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
        })
        .map_err(|error| StoreError::io(&self.root, std::io::Error::other(error)))?;
        let gauges = Arc::new(DiskGauges::default());
        let pushed = self.shared.push(Op::Create {
            key,
            dir: self.root.join(format!("{QUEUE_PREFIX}{key}")),
            meta,
            gauges: gauges.clone(),
        });
        if !pushed {
            return Err(StoreError::Closed);
        }
        Ok(self.journal(key, name, gauges))
    }

    fn barrier(&self, confirm: &Arc<PendingConfirm>) {
        confirm.hold();
        if !self.shared.push(Op::Barrier {
            confirm: confirm.clone(),
        }) {
            confirm.release();
        }
    }

    fn backlogged(&self) -> bool {
        self.shared.backlogged()
    }

    fn wait_for_room(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let notified = self.shared.room.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !self.shared.backlogged() {
                    return;
                }
                notified.await;
            }
        })
    }

    fn close(&self) {
        self.shared.close();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the store's writer thread panicked");
            }
        }
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            url: format!("file://{}", self.root.display()),
            fsync: self.policy.to_string(),
            failed_to_load: self
                .failed_to_load
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
            failing_writes: self
                .shared
                .failing()
                .values()
                .map(|(name, error)| format!("{name}: {error}"))
                .collect(),
        }
    }

    fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// A queue's journal in the file store.
#[derive(Debug)]
struct FileJournal {
    key: u64,
    name: String,
    shared: Arc<Shared>,
    gauges: Arc<DiskGauges>,
}

impl QueueJournal for FileJournal {
    fn append(
        &self,
        record: MessageRecord,
        confirm: Option<&Arc<PendingConfirm>>,
    ) -> Result<(), StoreError> {
        if self.gauges.failed.load(Ordering::Acquire) {
            let reason = self
                .shared
                .failing()
                .get(&self.key)
                .map(|(_, error)| error.clone())
                .unwrap_or_else(|| "write failed".into());
            return Err(StoreError::Unavailable {
                queue: self.name.clone(),
                reason,
            });
        }
        if let Some(confirm) = confirm {
            confirm.hold();
        }
        let pushed = self.shared.push(Op::Append {
            key: self.key,
            record,
            confirm: confirm.cloned(),
        });
        if !pushed {
            if let Some(confirm) = confirm {
                confirm.release();
            }
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    fn mark(&self, id: u64, mark: Mark) {
        self.shared.push(Op::Mark {
            key: self.key,
            id,
            mark,
        });
    }

    fn delete(&self) {
        self.shared.push(Op::Delete { key: self.key });
    }

    fn gauges(&self) -> &DiskGauges {
        &self.gauges
    }
}
