//! The startup checkpoint of a queue's log: each segment's index (`<first
//! id:020>.index`), an entry every [`INDEX_INTERVAL`] bytes saying where a record
//! starts (its id, offset and ordinal), CRC-checked; and reading a segment at
//! startup from the last entry before which every id is settled.
//!
//! The index is a hint, never the truth: an entry is used only when the record
//! found at its offset has the entry's id. Ids ascend through a segment file, so
//! everything skipped is below that id, and every id below it is settled (the marks
//! say so): nothing live is ever skipped. A missing, torn, stale (a compaction
//! rewrote the file) or damaged index means reading the whole segment. Damage in
//! the skipped part is not looked for: it holds nothing to recover.

use std::path::Path;

use bytes::Bytes;
use rustc_hash::FxHashSet;

use super::disk::Disk;
use super::record::{self, Record};
use super::LoadError;

/// Bytes of a segment between two index entries.
pub(super) const INDEX_INTERVAL: u64 = 1 << 20;
/// One index entry: id, offset, ordinal (u64 each) and a CRC32C of them.
const INDEX_ENTRY_BYTES: usize = 28;

/// Where reading a segment at startup begins.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// Byte offset in the log file.
    pub(super) offset: u64,
    /// The id of the record there (ids below it are all settled).
    pub(super) id: u64,
    /// Records before it.
    pub(super) ordinal: u64,
}

pub(super) fn encode_index_entry(out: &mut Vec<u8>, id: u64, offset: u64, ordinal: u64) {
    let start = out.len();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&ordinal.to_be_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// The index's entries up to the first torn or damaged one.
fn read_index(disk: &dyn Disk, path: &Path) -> Vec<Start> {
    let Ok(bytes) = disk.read(path) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for chunk in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
        let field = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&chunk[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&chunk[24..28]);
        if crc32c::crc32c(&chunk[..24]) != u32::from_be_bytes(crc) {
            break;
        }
        entries.push(Start {
            id: field(0),
            offset: field(8),
            ordinal: field(16),
        });
    }
    entries
}

/// Reads a segment's log for startup: from the last index entry before which every
/// id is settled when the record there is the one it names, else from the start.
pub(super) fn read_segment(
    disk: &dyn Disk,
    log_path: &Path,
    index_path: &Path,
    first: u64,
    settled: &FxHashSet<u64>,
) -> Result<(Start, Bytes, record::Scan), LoadError> {
    let whole = Start {
        offset: 0,
        id: first,
        ordinal: 0,
    };
    // The lowest id of the segment not settled: everything below it may be skipped.
    let mut lowest_live = first;
    while settled.contains(&lowest_live) {
        lowest_live += 1;
    }
    let checkpoint = read_index(disk, index_path)
        .into_iter()
        .filter(|entry| entry.id <= lowest_live && entry.id > first)
        .max_by_key(|entry| entry.id);
    if let Some(start) = checkpoint {
        let bytes = Bytes::from(
            disk.read_from(log_path, start.offset)
                .map_err(|error| LoadError::io(log_path, error))?,
        );
        let scan = record::scan(&bytes);
        let lands = matches!(scan.records.first(), Some(Record::Message(message)) if message.id == start.id);
        if lands {
            return Ok((start, bytes, scan));
        }
        tracing::warn!(file = %log_path.display(), offset = start.offset, "a stale index entry; reading the whole segment");
    }
    let bytes = Bytes::from(
        disk.read(log_path)
            .map_err(|error| LoadError::io(log_path, error))?,
    );
    let scan = record::scan(&bytes);
    Ok((whole, bytes, scan))
}
