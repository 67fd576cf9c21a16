//! One queue's log, as the writer thread keeps it: segment files of message
//! records, each with a marks file beside it (which of its ids were settled or
//! delivered), live counts, rolling, reclaiming and compaction; and reading it all
//! back at startup.
//!
//! Files in the queue's directory: `queue.meta` (name and pattern, written
//! atomically), `<first id:020>.log` (message records), `<first id:020>.marks` and
//! `<first id:020>.index`. A segment's ids are one ascending run (a queue's appends
//! reach the writer in id order), so its settled ids are a bitmap.
//!
//! The index is the startup checkpoint: every `INDEX_INTERVAL` (1 MiB) bytes of a segment
//! it records where a record starts (its id, offset and ordinal). At startup, with
//! the marks read first, a segment is read from the last indexed record before
//! which every id is settled, instead of from its start: a queue whose consumers
//! keep up (acked in order) reads back little more than what is still live. The
//! index is only a hint: an entry is used only when the record found at its offset
//! has its id (ids ascend through a file, so everything skipped is below it and
//! settled), and a missing, torn or stale index means reading the whole segment.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use super::checkpoint::{encode_index_entry, read_segment, INDEX_INTERVAL};
use super::disk::{AppendFile, Disk};
use super::record::{self, encode_marks, encode_message, Mark, MessageRecord, Record};
use super::LoadError;

/// An active segment that is wholly settled is deleted once it is this big (or
/// idle for [`IDLE_SEGMENT`]), so a queue that keeps up does not create and delete
/// a file per batch.
const RECLAIM_ACTIVE_BYTES: u64 = 1 << 20;
/// An active segment not written for this long is rolled when wholly settled, and
/// its files are closed.
pub(super) const IDLE_SEGMENT: Duration = Duration::from_secs(5);
/// A sealed segment (at least half of `STORE_SEGMENT_BYTES`) with fewer live
/// records than this share of the ones it holds is compacted (rewritten with only
/// the live ones).
const COMPACT_LIVE_SHARE: f64 = 0.5;

/// On-disk size of a queue, for `/metrics` (shared with the queue's journal).
#[derive(Debug, Default)]
pub struct DiskGauges {
    /// Bytes of segment files.
    pub bytes: AtomicU64,
    /// Segment files.
    pub segments: AtomicU64,
    /// Set while the queue's last write failed: publishes are refused.
    pub failed: AtomicBool,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// Ids held: `first..first + span`.
    span: u64,
    records: u64,
    live: u64,
    settled: Vec<u64>,
    /// Bytes written (or about to be: `pending` comes on top).
    size: u64,
    pending: Vec<u8>,
    settled_pending: Vec<u64>,
    delivered_pending: Vec<u64>,
    /// Index entries not yet written.
    index_pending: Vec<u8>,
    /// The offset from which the next record gets an index entry.
    next_index_at: u64,
    log: Option<Box<dyn AppendFile>>,
    marks: Option<Box<dyn AppendFile>>,
    index: Option<Box<dyn AppendFile>>,
    sealed: bool,
    /// Written since the last sync.
    unsynced: bool,
    last_write: Instant,
}

impl Segment {
    fn new(first: u64) -> Self {
        Segment {
            first,
            span: 0,
            records: 0,
            live: 0,
            settled: Vec::new(),
            size: 0,
            pending: Vec::new(),
            settled_pending: Vec::new(),
            delivered_pending: Vec::new(),
            index_pending: Vec::new(),
            next_index_at: INDEX_INTERVAL,
            log: None,
            marks: None,
            index: None,
            sealed: false,
            unsynced: false,
            last_write: Instant::now(),
        }
    }

    fn holds(&self, id: u64) -> bool {
        id >= self.first && id < self.first + self.span
    }

    fn is_settled(&self, id: u64) -> bool {
        let bit = (id - self.first) as usize;
        self.settled
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    fn set_settled(&mut self, id: u64) -> bool {
        let bit = (id - self.first) as usize;
        if self.settled.len() <= bit / 64 {
            self.settled.resize(bit / 64 + 1, 0);
        }
        let word = &mut self.settled[bit / 64];
        let was = *word & (1 << (bit % 64)) != 0;
        *word |= 1 << (bit % 64);
        !was
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
            || !self.settled_pending.is_empty()
            || !self.delivered_pending.is_empty()
    }
}

/// One queue's log in the writer thread.
#[derive(Debug)]
pub(super) struct QueueLog {
    pub(super) dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    segment_bytes: u64,
    /// The next id the queue will append (ids below it are placed).
    next_id: u64,
    /// Files were created or removed since the directory was last synced.
    dir_dirty: bool,
    pub(super) gauges: Arc<DiskGauges>,
}

/// Outcome of writing a queue's batch.
#[derive(Debug, Default)]
pub(super) struct Flushed {
    /// Files synced.
    pub(super) syncs: u64,
}

impl QueueLog {
    /// A new, empty log in `dir` (which exists, with its meta file).
    pub(super) fn new(dir: PathBuf, segment_bytes: u64, gauges: Arc<DiskGauges>) -> Self {
        QueueLog {
            dir,
            segments: BTreeMap::new(),
            segment_bytes,
            next_id: 0,
            dir_dirty: false,
            gauges,
        }
    }

    fn log_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.log"))
    }

    fn marks_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.marks"))
    }

    fn index_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.index"))
    }

    /// Adds a record to the batch (written by [`QueueLog::flush`]).
    pub(super) fn append(&mut self, record: &MessageRecord) {
        let roll = match self.segments.values().next_back() {
            None => true,
            Some(active) => {
                active.sealed
                    || (active.records > 0
                        && active.size + active.pending.len() as u64 >= self.segment_bytes)
                    || record.id < active.first
            }
        };
        if roll {
            if let Some(active) = self.segments.values_mut().next_back() {
                active.sealed = true;
            }
            self.segments.insert(record.id, Segment::new(record.id));
            self.dir_dirty = true;
        }
        let Some(active) = self.segments.values_mut().next_back() else {
            return;
        };
        let offset = active.size + active.pending.len() as u64;
        if offset >= active.next_index_at {
            encode_index_entry(&mut active.index_pending, record.id, offset, active.records);
            active.next_index_at = offset + INDEX_INTERVAL;
        }
        encode_message(&mut active.pending, record);
        active.span = record.id + 1 - active.first;
        active.records += 1;
        active.live += 1;
        self.next_id = record.id + 1;
    }

    /// Records a mark on `id` (ignored for an id the log does not hold).
    pub(super) fn mark(&mut self, id: u64, mark: Mark) {
        let Some((_, segment)) = self.segments.range_mut(..=id).next_back() else {
            return;
        };
        if !segment.holds(id) || segment.is_settled(id) {
            return;
        }
        match mark {
            Mark::Settled => {
                segment.set_settled(id);
                segment.live -= 1;
                segment.settled_pending.push(id);
            }
            Mark::Delivered => segment.delivered_pending.push(id),
        }
    }

    /// Writes the batch; syncs what was written when `sync` (and always a segment
    /// that was sealed, so that only the active segment can have a torn tail).
    /// On an error, cuts the active segment back to what was there before.
    pub(super) fn flush(&mut self, disk: &dyn Disk, sync: bool) -> io::Result<Flushed> {
        let mut flushed = Flushed::default();
        let firsts: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, segment)| {
                segment.has_pending() || (segment.unsynced && (sync || segment.sealed))
            })
            .map(|(first, _)| *first)
            .collect();
        for first in firsts {
            let paths = SegmentPaths {
                log: self.log_path(first),
                marks: self.marks_path(first),
                index: self.index_path(first),
            };
            let log_path = paths.log.clone();
            let Some(segment) = self.segments.get_mut(&first) else {
                continue;
            };
            let before = segment.size;
            let result = write_segment(disk, segment, &paths, sync, &mut flushed);
            if let Err(error) = result {
                // What this batch appended is refused: cut it off the file so a
                // later append does not follow a partial record.
                let size = before;
                segment.size = before;
                segment.pending.clear();
                segment.index_pending.clear();
                segment.next_index_at = segment.next_index_at.min(before + INDEX_INTERVAL);
                segment.log = None;
                let _ = disk.truncate(&log_path, size);
                return Err(error);
            }
        }
        if self.dir_dirty && sync {
            disk.sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.update_gauges();
        Ok(flushed)
    }

    /// The records of this batch that [`QueueLog::flush`] failed to write were
    /// refused: they leave the live count, and are marked settled in case part of
    /// them reached the disk.
    pub(super) fn forget_failed(&mut self, ids: &[u64]) {
        for id in ids {
            self.mark(*id, Mark::Settled);
        }
    }

    /// Deletes wholly settled segments: sealed ones at once, the active one when it
    /// is big or idle. Returns whether any file was removed.
    pub(super) fn reclaim(&mut self, disk: &dyn Disk, now: Instant) -> io::Result<bool> {
        let last = self.segments.keys().next_back().copied();
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, segment)| {
                segment.records > 0
                    && segment.live == 0
                    && !segment.has_pending()
                    && (segment.sealed
                        || Some(**first) != last
                        || segment.size >= RECLAIM_ACTIVE_BYTES
                        || now.duration_since(segment.last_write) >= IDLE_SEGMENT)
            })
            .map(|(first, _)| *first)
            .collect();
        for first in &done {
            self.segments.remove(first);
            disk.remove_file(&self.log_path(*first))?;
            disk.remove_file(&self.marks_path(*first))?;
            disk.remove_file(&self.index_path(*first))?;
            self.dir_dirty = true;
        }
        if !done.is_empty() {
            self.update_gauges();
        }
        Ok(!done.is_empty())
    }

    /// Closes the files of segments not written for [`IDLE_SEGMENT`] (they reopen
    /// on the next write), so idle queues hold no file descriptors.
    pub(super) fn close_idle(&mut self, now: Instant) {
        for segment in self.segments.values_mut() {
            if !segment.unsynced && now.duration_since(segment.last_write) >= IDLE_SEGMENT {
                segment.log = None;
                segment.marks = None;
                segment.index = None;
            }
        }
    }

    /// Rewrites one sealed segment that is mostly settled with only its live
    /// records (their delivery counts carried into the records), then drops its
    /// marks. Returns whether one was compacted.
    ///
    /// A crash between the rename and the marks file's removal leaves the new log
    /// beside the old marks: ids in them that were settled are absent and ignored;
    /// delivered marks are counted twice into the attempt count (an over-count,
    /// never a lost message).
    pub(super) fn compact_one(&mut self, disk: &dyn Disk) -> io::Result<bool> {
        let candidate = self.segments.iter().find(|(_, segment)| {
            segment.sealed
                && !segment.has_pending()
                && segment.live > 0
                && segment.size >= self.segment_bytes / 2
                && (segment.live as f64) < segment.records as f64 * COMPACT_LIVE_SHARE
        });
        let Some((&first, _)) = candidate else {
            return Ok(false);
        };
        let log_path = self.log_path(first);
        let marks_path = self.marks_path(first);
        // The index would point into the old file: gone (durably) first.
        disk.remove_file(&self.index_path(first))?;
        disk.sync_dir(&self.dir)?;
        let delivered = read_delivered(disk, &marks_path)?;
        let scan = record::scan(&Bytes::from(disk.read(&log_path)?));
        let Some(segment) = self.segments.get_mut(&first) else {
            return Ok(false);
        };
        let mut rewritten = Vec::new();
        let mut kept = 0;
        for record in scan.records {
            if let Record::Message(mut message) = record {
                if segment.holds(message.id) && !segment.is_settled(message.id) {
                    message.attempts += delivered.get(&message.id).copied().unwrap_or(0);
                    encode_message(&mut rewritten, &message);
                    kept += 1;
                }
            }
        }
        disk.write_atomic(&log_path, &rewritten)?;
        disk.remove_file(&marks_path)?;
        disk.sync_dir(&self.dir)?;
        segment.log = None;
        segment.marks = None;
        segment.index = None;
        segment.index_pending.clear();
        segment.size = rewritten.len() as u64;
        segment.records = kept;
        segment.live = kept;
        self.update_gauges();
        Ok(true)
    }

    /// The id after the last one placed (the queue continues from here).
    pub(super) fn next_id(&self) -> u64 {
        self.next_id
    }

    fn update_gauges(&self) {
        let bytes = self.segments.values().map(|segment| segment.size).sum();
        self.gauges.bytes.store(bytes, Ordering::Relaxed);
        self.gauges
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
    }

    /// Reads the log in `dir` back: the live messages in id order, each with the
    /// number of times it was delivered. A torn tail of the last segment (nothing
    /// good after the damage) is cut off and logged; damage anywhere else is an
    /// error naming the file and offset.
    pub(super) fn load(
        disk: &dyn Disk,
        dir: PathBuf,
        segment_bytes: u64,
        gauges: Arc<DiskGauges>,
    ) -> Result<(QueueLog, Vec<MessageRecord>), LoadError> {
        let mut log = QueueLog::new(dir.clone(), segment_bytes, gauges);
        let names = disk
            .list(&dir)
            .map_err(|error| LoadError::io(&dir, error))?;
        for name in &names {
            if name.ends_with(".tmp") {
                let _ = disk.remove_file(&dir.join(name));
            }
        }
        let firsts: Vec<u64> = names
            .iter()
            .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
            .collect();
        let mut live = Vec::new();
        for (index, first) in firsts.iter().copied().enumerate() {
            let is_last = index + 1 == firsts.len();
            let log_path = log.log_path(first);
            let marks_path = log.marks_path(first);
            let (settled, delivered) = read_marks(disk, &marks_path)?;
            let (start, bytes, scan) =
                read_segment(disk, &log_path, &log.index_path(first), first, &settled)?;
            let mut size = start.offset + bytes.len() as u64;
            if let Some((offset, damage, followed)) = scan.damage {
                let offset = start.offset + offset as u64;
                if !is_last || followed {
                    return Err(LoadError::Damaged {
                        file: log_path,
                        offset,
                        what: damage.describe(),
                    });
                }
                tracing::warn!(file = %log_path.display(), offset, cut = size - offset, what = damage.describe(), "torn tail of a queue log cut off");
                disk.truncate(&log_path, offset)
                    .map_err(|error| LoadError::io(&log_path, error))?;
                size = offset;
            }
            let mut segment = Segment::new(first);
            segment.size = size;
            segment.sealed = !is_last;
            segment.next_index_at = size.max(start.offset + INDEX_INTERVAL);
            // What the checkpoint skipped: records below `start.id`, all settled.
            segment.records = start.ordinal;
            for id in settled
                .iter()
                .copied()
                .filter(|id| *id >= first && *id < start.id)
            {
                segment.set_settled(id);
                segment.span = segment.span.max(id + 1 - first);
            }
            for record in scan.records {
                let Record::Message(mut message) = record else {
                    continue;
                };
                if message.id < first {
                    return Err(LoadError::Damaged {
                        file: log_path,
                        offset: 0,
                        what: "a record whose id is below its segment's first id",
                    });
                }
                segment.span = message.id + 1 - first;
                segment.records += 1;
                log.next_id = log.next_id.max(message.id + 1);
                if settled.contains(&message.id) {
                    segment.set_settled(message.id);
                    continue;
                }
                segment.live += 1;
                message.attempts += delivered.get(&message.id).copied().unwrap_or(0);
                live.push(message);
            }
            log.segments.insert(first, segment);
        }
        live.sort_by_key(|message| message.id);
        log.update_gauges();
        Ok((log, live))
    }
}

/// A segment's three files.
struct SegmentPaths {
    log: PathBuf,
    marks: PathBuf,
    index: PathBuf,
}

fn write_segment(
    disk: &dyn Disk,
    segment: &mut Segment,
    paths: &SegmentPaths,
    sync: bool,
    flushed: &mut Flushed,
) -> io::Result<()> {
    let now = Instant::now();
    let (log_path, marks_path) = (&paths.log, &paths.marks);
    if !segment.pending.is_empty() {
        if segment.log.is_none() {
            segment.log = Some(disk.open_append(log_path)?);
        }
        if let Some(file) = segment.log.as_mut() {
            file.append(&segment.pending)?;
        }
        segment.size += segment.pending.len() as u64;
        segment.pending.clear();
        segment.unsynced = true;
        segment.last_write = now;
        // After the records it points to; never synced on its own account (a lost
        // or torn index only means reading more at startup).
        if !segment.index_pending.is_empty() {
            if segment.index.is_none() {
                segment.index = Some(disk.open_append(&paths.index)?);
            }
            if let Some(file) = segment.index.as_mut() {
                file.append(&segment.index_pending)?;
            }
            segment.index_pending.clear();
        }
    }
    if !segment.settled_pending.is_empty() || !segment.delivered_pending.is_empty() {
        let mut bytes = Vec::new();
        encode_marks(&mut bytes, Mark::Settled, &segment.settled_pending);
        encode_marks(&mut bytes, Mark::Delivered, &segment.delivered_pending);
        if segment.marks.is_none() {
            segment.marks = Some(disk.open_append(marks_path)?);
        }
        if let Some(file) = segment.marks.as_mut() {
            file.append(&bytes)?;
        }
        segment.settled_pending.clear();
        segment.delivered_pending.clear();
        segment.unsynced = true;
        segment.last_write = now;
    }
    if segment.unsynced && (sync || segment.sealed) {
        if let Some(file) = segment.log.as_mut() {
            file.sync()?;
            flushed.syncs += 1;
        }
        if let Some(file) = segment.marks.as_mut() {
            file.sync()?;
            flushed.syncs += 1;
        }
        segment.unsynced = false;
    }
    Ok(())
}

/// Settled ids and delivery counts from a marks file (missing: none). A torn tail
/// is cut off; damage inside is an error.
fn read_marks(
    disk: &dyn Disk,
    path: &Path,
) -> Result<(FxHashSet<u64>, FxHashMap<u64, u32>), LoadError> {
    let mut settled = FxHashSet::default();
    let mut delivered: FxHashMap<u64, u32> = FxHashMap::default();
    let bytes = match disk.read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((settled, delivered)),
        Err(error) => return Err(LoadError::io(path, error)),
    };
    let scan = record::scan(&bytes);
    if let Some((offset, damage, followed)) = scan.damage {
        if followed {
            return Err(LoadError::Damaged {
                file: path.to_path_buf(),
                offset: offset as u64,
                what: damage.describe(),
            });
        }
        tracing::warn!(file = %path.display(), offset, "torn tail of a marks file cut off");
        disk.truncate(path, offset as u64)
            .map_err(|error| LoadError::io(path, error))?;
    }
    for record in scan.records {
        match record {
            Record::Marks(Mark::Settled, ids) => settled.extend(ids),
            Record::Marks(Mark::Delivered, ids) => {
                for id in ids {
                    *delivered.entry(id).or_default() += 1;
                }
            }
            Record::Message(_) => {}
        }
    }
    Ok((settled, delivered))
}

fn read_delivered(disk: &dyn Disk, path: &Path) -> io::Result<FxHashMap<u64, u32>> {
    read_marks(disk, path)
        .map(|(_, delivered)| delivered)
        .map_err(|error| io::Error::other(error.to_string()))
}
