//! The store's proofs on the storage double: segments roll, are deleted and
//! compacted keeping exactly the unsettled messages in order; no confirmed message
//! is lost across simulated power cuts at random points; a failing disk refuses
//! one queue's publishes and leaves the others alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tern_proto::{ErrorCode, Frame, Message};

use super::disk::Disk;
use super::queue_log::{DiskGauges, QueueLog};
use super::sim_disk::SimDisk;
use super::{
    FileStore, FsyncPolicy, Mark, MessageRecord, OwedConfirms, PendingConfirm, QueueJournal, Store,
};
use crate::outbound::{take_frames, Outbox};

fn record(id: u64) -> MessageRecord {
    MessageRecord {
        id,
        published_ms: 1_700_000_000_000,
        deliver_at_ms: 0,
        priority: 0,
        attempts: 0,
        message: Message::new("jobs", format!("message {id:06} {}", "x".repeat(80)))
            .expect("valid"),
    }
}

fn ids(records: &[MessageRecord]) -> Vec<u64> {
    records.iter().map(|record| record.id).collect()
}

fn segment_files(disk: &SimDisk, dir: &Path) -> Vec<String> {
    disk.list(dir)
        .expect("listed")
        .into_iter()
        .filter(|name| name.ends_with(".log"))
        .collect()
}

#[test]
fn segments_roll_are_deleted_and_compacted_keeping_exactly_the_unsettled_in_order() {
    let disk = SimDisk::new();
    let dir = PathBuf::from("/data/q-1");
    disk.create_dir_all(&dir).expect("dir");
    disk.sync_dir(Path::new("/data")).expect("synced");
    disk.sync_dir(Path::new("/")).expect("synced");
    let segment_bytes = 16 << 10;
    let mut log = QueueLog::new(dir.clone(), segment_bytes, Arc::new(DiskGauges::default()));
    for id in 0..1000 {
        log.append(&record(id));
        if id % 50 == 49 {
            log.flush(&disk, true).expect("written");
        }
    }
    log.flush(&disk, true).expect("written");
    let rolled = segment_files(&disk, &dir).len();
    assert!(
        rolled >= 6,
        "1000 records of ~130 B roll 16 KiB segments ({rolled})"
    );

    // Settle everything in the first half: its segments go away.
    for id in 0..500 {
        log.mark(id, Mark::Settled);
    }
    // In the second half, keep every tenth: those sealed segments are compacted.
    let mut expected: Vec<u64> = Vec::new();
    for id in 500..1000 {
        if id % 10 == 0 || id >= 990 {
            expected.push(id);
        } else {
            log.mark(id, Mark::Settled);
        }
    }
    log.mark(500, Mark::Delivered);
    log.flush(&disk, true).expect("written");
    assert!(log.reclaim(&disk, Instant::now()).expect("reclaimed"));
    let mut compacted = 0;
    while log.compact_one(&disk).expect("compacted") {
        compacted += 1;
    }
    assert!(
        compacted >= 2,
        "mostly settled sealed segments are rewritten ({compacted})"
    );
    assert!(segment_files(&disk, &dir).len() < rolled);

    let (reloaded, live) = QueueLog::load(
        &disk,
        dir.clone(),
        segment_bytes,
        Arc::new(DiskGauges::default()),
    )
    .expect("loads");
    assert_eq!(ids(&live), expected);
    assert_eq!(
        live[0].attempts, 1,
        "the delivery count survives compaction"
    );
    assert_eq!(reloaded.next_id(), 1000);

    // After a power cut, the synced state is exactly what was read.
    disk.power_cut(7);
    let (_, after_cut) =
        QueueLog::load(&disk, dir, segment_bytes, Arc::new(DiskGauges::default())).expect("loads");
    assert_eq!(ids(&after_cut), expected);
}

#[test]
fn a_torn_tail_is_cut_and_damage_inside_a_sealed_segment_stops_only_that_queue() {
    let disk = SimDisk::new();
    let dir = PathBuf::from("/data/q-1");
    disk.create_dir_all(&dir).expect("dir");
    let mut log = QueueLog::new(dir.clone(), 4 << 10, Arc::new(DiskGauges::default()));
    for id in 0..100 {
        log.append(&record(id));
        log.flush(&disk, true).expect("written");
    }
    // A torn last record: cut off, the rest loads.
    let files = segment_files(&disk, &dir);
    let last = dir.join(files.last().expect("segments"));
    let bytes = disk.read(&last).expect("read");
    disk.truncate(&last, bytes.len() as u64 - 5).expect("cut");
    let (_, live) = QueueLog::load(&disk, dir.clone(), 4 << 10, Arc::new(DiskGauges::default()))
        .expect("a torn tail is not an error");
    assert_eq!(ids(&live), (0..99).collect::<Vec<_>>());

    // A flipped byte inside the first (sealed) segment: an error naming the file
    // and offset, never a silent skip.
    let first = dir.join(&files[0]);
    let mut bytes = disk.read(&first).expect("read");
    bytes[200] ^= 0x40;
    disk.remove_file(&first).expect("removed");
    let mut file = disk.open_append(&first).expect("created");
    file.append(&bytes).expect("written");
    file.sync().expect("synced");
    let error = QueueLog::load(&disk, dir, 4 << 10, Arc::new(DiskGauges::default()))
        .expect_err("damage inside");
    let text = error.to_string();
    assert!(
        text.contains(&files[0]) && text.contains("offset"),
        "{text}"
    );
}

/// What a publisher saw from the confirms of one round.
fn answers(outbox: &Outbox) -> BTreeMap<u64, Option<u16>> {
    take_frames(outbox)
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::PublishOk { sequence } => Some((sequence, None)),
            Frame::PublishError(error) => Some((error.sequence, Some(error.code))),
            _ => None,
        })
        .collect()
}

fn outbox() -> Arc<Outbox> {
    Outbox::new(
        1,
        100,
        Arc::new(crate::stats::Stats::default()),
        crate::clock::now(),
    )
}

fn open(disk: &SimDisk) -> (FileStore, Vec<super::RecoveredQueue>, bool) {
    let store = FileStore::open_on(
        Arc::new(disk.clone()),
        PathBuf::from("/data"),
        FsyncPolicy::Always,
        8 << 10,
    );
    let recovery = store.recover().expect("recovers");
    assert!(recovery.failed.is_empty(), "{:?}", recovery.failed);
    (store, recovery.queues, recovery.clean)
}

/// Waits until the writer has done everything handed to it so far.
async fn written(store: &FileStore) {
    let owed = Arc::new(OwedConfirms::default());
    let barrier = PendingConfirm::new(outbox(), 0, owed.clone());
    store.barrier(&barrier);
    barrier.release();
    owed.wait_settled().await;
}

/// Appends `count` confirmed messages from `next`, waits for every answer, and
/// returns the ids confirmed (PUBLISH_OK).
async fn publish_round(journal: &Arc<dyn QueueJournal>, next: &mut u64, count: u64) -> Vec<u64> {
    let outbox = outbox();
    let owed = Arc::new(OwedConfirms::default());
    let mut sent = BTreeMap::new();
    for _ in 0..count {
        let id = *next;
        *next += 1;
        let confirm = PendingConfirm::new(outbox.clone(), id + 1, owed.clone());
        if journal.append(record(id), Some(&confirm)).is_err() {
            confirm.fail(ErrorCode::StorageFailed, "refused");
        }
        confirm.release();
        sent.insert(id + 1, id);
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), owed.wait_settled())
        .await
        .expect("every confirm is answered");
    answers(&outbox)
        .into_iter()
        .filter(|(_, code)| code.is_none())
        .filter_map(|(sequence, _)| sent.get(&sequence).copied())
        .collect()
}

#[tokio::test]
async fn no_confirmed_message_is_lost_across_power_cuts_at_random_points() {
    let mut random: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next_random = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let mut cuts = 0;
    for round in 0..40 {
        let disk = SimDisk::new();
        let mut confirmed: BTreeSet<u64> = BTreeSet::new();
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        let mut appended_up_to = 0u64;
        // Several lives of one store, each ended by a cut at a random operation.
        for life in 0..4 {
            let (store, queues, _) = open(&disk);
            let (journal, live): (Arc<dyn QueueJournal>, Vec<u64>) = match queues.into_iter().next()
            {
                Some(queue) => {
                    appended_up_to = appended_up_to.max(queue.next_id);
                    (queue.journal, ids(&queue.messages))
                }
                None => (
                    store.create_queue("jobs", "jobs").expect("created"),
                    Vec::new(),
                ),
            };
            let live_set: BTreeSet<u64> = live.iter().copied().collect();
            for id in &confirmed {
                assert!(
                    live_set.contains(id) || acked.contains(id),
                    "round {round} life {life}: confirmed message {id} was lost"
                );
            }
            assert!(live.windows(2).all(|pair| pair[0] < pair[1]), "in order");
            disk.cut_after(next_random() % 400 + 5);
            cuts += 1;
            let mut next = appended_up_to;
            for _ in 0..3 {
                let round_confirmed = publish_round(&journal, &mut next, 20).await;
                // Ack a few of them (acks are not waited for).
                for id in round_confirmed.iter().step_by(3) {
                    journal.mark(*id, Mark::Settled);
                    acked.insert(*id);
                }
                confirmed.extend(round_confirmed);
            }
            appended_up_to = next;
            drop(journal);
            store.close();
            drop(store);
            disk.power_cut(next_random());
        }
    }
    assert_eq!(cuts, 160);
}

#[tokio::test]
async fn a_failing_disk_refuses_one_queues_publishes_and_leaves_the_others_alone() {
    let disk = SimDisk::new();
    let (store, _, _) = open(&disk);
    let broken = store.create_queue("broken", "broken").expect("created");
    let fine = store.create_queue("fine", "fine").expect("created");
    let (mut broken_next, mut fine_next) = (0, 0);
    assert_eq!(publish_round(&broken, &mut broken_next, 5).await.len(), 5);
    disk.fail_appends_under(Path::new("/data/q-1"));
    assert!(
        publish_round(&broken, &mut broken_next, 5).await.is_empty(),
        "refused"
    );
    assert!(
        matches!(
            broken.append(record(broken_next), None),
            Err(super::StoreError::Unavailable { .. })
        ),
        "refused at once while failing"
    );
    assert_eq!(
        publish_round(&fine, &mut fine_next, 5).await.len(),
        5,
        "the other queue works"
    );
    assert_eq!(store.health().failing_writes.len(), 1);
    disk.heal();
    store.maintain_now();
    // The retry is taken in order: the next round is accepted.
    written(&store).await;
    assert_eq!(
        publish_round(&broken, &mut broken_next, 5).await.len(),
        5,
        "healed"
    );
    assert!(store.health().failing_writes.is_empty());
    store.close();
    drop(store);
    let (_, queues, clean) = open(&disk);
    assert!(clean);
    let by_name: BTreeMap<String, usize> = queues
        .iter()
        .map(|queue| (queue.name.clone(), queue.messages.len()))
        .collect();
    assert_eq!(by_name["fine"], 5);
    assert_eq!(
        by_name["broken"], 10,
        "the 5 before and the 5 after the failure"
    );
}

#[test]
fn an_idle_wholly_settled_active_segment_is_rolled_and_deleted() {
    let disk = SimDisk::new();
    let dir = PathBuf::from("/data/q-1");
    disk.create_dir_all(&dir).expect("dir");
    let mut log = QueueLog::new(dir.clone(), 64 << 20, Arc::new(DiskGauges::default()));
    for id in 0..10 {
        log.append(&record(id));
    }
    log.flush(&disk, true).expect("written");
    for id in 0..10 {
        log.mark(id, Mark::Settled);
    }
    log.flush(&disk, true).expect("written");
    let now = Instant::now();
    assert!(
        !log.reclaim(&disk, now).expect("checked"),
        "small and just written: kept"
    );
    let later = now + super::queue_log::IDLE_SEGMENT;
    assert!(
        log.reclaim(&disk, later).expect("reclaimed"),
        "idle: rolled and deleted"
    );
    assert!(segment_files(&disk, &dir).is_empty());
    // The queue goes on in a new segment.
    log.append(&record(10));
    log.flush(&disk, true).expect("written");
    let (_, live) =
        QueueLog::load(&disk, dir, 64 << 20, Arc::new(DiskGauges::default())).expect("loads");
    assert_eq!(ids(&live), vec![10]);
}

#[tokio::test]
async fn interval_and_never_confirm_after_the_write_and_sync_at_a_clean_stop() {
    for policy in [
        FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        FsyncPolicy::Never,
    ] {
        let disk = SimDisk::new();
        let store = FileStore::open_on(
            Arc::new(disk.clone()),
            PathBuf::from("/data"),
            policy,
            8 << 10,
        );
        store.recover().expect("recovers");
        let journal = store.create_queue("jobs", "jobs").expect("created");
        written(&store).await;
        let syncs_before = disk.syncs();
        let mut next = 0;
        assert_eq!(
            publish_round(&journal, &mut next, 20).await.len(),
            20,
            "{policy}"
        );
        assert_eq!(
            disk.syncs(),
            syncs_before,
            "{policy}: confirmed without an fsync"
        );
        // A power cut now may lose them: that is the documented window.
        store.close();
        assert!(disk.syncs() > syncs_before, "{policy}: a clean stop syncs");
        drop(store);
        disk.power_cut(3);
        let (_, queues, clean) = open(&disk);
        assert!(clean);
        assert_eq!(queues[0].messages.len(), 20, "{policy}: synced at the stop");
    }
}

/// The startup checkpoint: a segment whose first ids are settled (consumers keeping
/// up) is read from the last index entry before its first live id, not from its
/// start; the messages loaded are exactly the unsettled ones, the log continues
/// where it was, and a stale or damaged index only means reading it all.
#[test]
fn startup_reads_a_segment_from_its_checkpoint_and_loads_exactly_the_live_messages() {
    let disk = SimDisk::new();
    let dir = PathBuf::from("/data/q-1");
    disk.create_dir_all(&dir).expect("dir");
    let segment_bytes = 64 << 20;
    let mut log = QueueLog::new(dir.clone(), segment_bytes, Arc::new(DiskGauges::default()));
    // ~13 MiB in one active segment: 100,000 records of ~135 bytes.
    let total = 100_000;
    for id in 0..total {
        log.append(&record(id));
        if id % 1000 == 999 {
            log.flush(&disk, true).expect("written");
        }
    }
    // Settled in order up to 90 %, plus a few later ones.
    for id in (0..90_000).chain([95_000, 99_999]) {
        log.mark(id, Mark::Settled);
    }
    log.mark(90_000, Mark::Delivered);
    log.flush(&disk, true).expect("written");
    let expected: Vec<u64> = (90_000..total)
        .filter(|id| ![95_000, 99_999].contains(id))
        .collect();
    let file_bytes = disk
        .read(&dir.join(&segment_files(&disk, &dir)[0]))
        .expect("read")
        .len() as u64;

    let before = disk.bytes_read();
    let (mut reloaded, live) = QueueLog::load(
        &disk,
        dir.clone(),
        segment_bytes,
        Arc::new(DiskGauges::default()),
    )
    .expect("loads");
    let read = disk.bytes_read() - before;
    assert_eq!(ids(&live), expected);
    assert_eq!(
        live[0].attempts, 1,
        "delivery counts are read from the marks"
    );
    assert!(
        read < file_bytes / 5,
        "read {read} bytes of a {file_bytes}-byte segment (marks included)"
    );
    assert_eq!(reloaded.next_id(), total);
    // The log goes on: new records, and what the checkpoint skipped is still
    // known to be settled (reclaim after everything is settled deletes the file).
    for id in total..total + 10 {
        reloaded.append(&record(id));
    }
    for id in expected.iter().copied().chain(total..total + 10) {
        reloaded.mark(id, Mark::Settled);
    }
    reloaded.flush(&disk, true).expect("written");
    assert!(reloaded
        .reclaim(&disk, Instant::now() + super::queue_log::IDLE_SEGMENT)
        .expect("reclaimed"));
    assert!(
        segment_files(&disk, &dir).is_empty(),
        "a wholly settled segment is deleted"
    );

    // A stale index (entries that point at the wrong place) is not trusted.
    let mut log = QueueLog::new(dir.clone(), segment_bytes, Arc::new(DiskGauges::default()));
    for id in 0..20_000 {
        log.append(&record(id));
    }
    for id in 0..19_000 {
        log.mark(id, Mark::Settled);
    }
    log.flush(&disk, true).expect("written");
    let index = disk
        .list(&dir)
        .expect("listed")
        .into_iter()
        .find(|name| name.ends_with(".index"))
        .expect("an index was written");
    let index = dir.join(index);
    let mut bytes = disk.read(&index).expect("read");
    // Rewrite the first entry's offset (and its checksum) to point 7 bytes off.
    let offset = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) + 7;
    bytes[8..16].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_be_bytes());
    disk.remove_file(&index).expect("removed");
    let mut file = disk.open_append(&index).expect("created");
    file.append(&bytes[..28]).expect("written");
    file.sync().expect("synced");
    let (_, live) =
        QueueLog::load(&disk, dir, segment_bytes, Arc::new(DiskGauges::default())).expect("loads");
    assert_eq!(ids(&live), (19_000..20_000).collect::<Vec<_>>());
}
