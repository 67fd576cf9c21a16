//! The on-disk record: how a message and a batch of marks are framed in a segment
//! file, and how a file of them is scanned back, torn tail and damage told apart.
//!
//! Every record is `length: u32 LE | crc32c: u32 LE | body`, the checksum over the
//! body. A message body is
//! `kind = 1 | id u64 | published_ms u64 | deliver_at_ms u64 | priority u8 | attempts u32 | message`
//! where `message` is the PUBLISH message fields as on the wire (subject, reply-to,
//! headers, payload; PROTOCOL.md § 3). A marks body is `kind (2 settled, 3 delivered) | id u64 …`.

use bytes::Bytes;
use tern_proto::{Message, Opcode};

/// Bytes before a record's body.
pub const HEADER_BYTES: usize = 8;
/// The largest body a record may have: anything longer is damage, not a record
/// (a frame is at most 64 MiB; headroom for the fixed fields).
pub const MAX_BODY_BYTES: usize = (64 << 20) + 1024;

/// How far past a damaged record a good one is looked for, to tell damage inside
/// a file (a good record follows) from a torn tail (garbage to the end): more than
/// one write batch of the writer.
pub const FOLLOW_WINDOW: usize = 16 << 20;

const KIND_MESSAGE: u8 = 1;
const KIND_SETTLED: u8 = 2;
const KIND_DELIVERED: u8 = 3;
/// Fixed fields of a message body after its kind byte.
const MESSAGE_FIXED: usize = 8 + 8 + 8 + 1 + 4;

/// A message as the log keeps it: its stable id in the queue and the fields queue
/// policies need, beside the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Its id: the queue's publish order, never reused.
    pub id: u64,
    /// When it was published, wall-clock milliseconds since the Unix epoch.
    pub published_ms: u64,
    /// Not to be delivered before this wall-clock millisecond (0: at once).
    pub deliver_at_ms: u64,
    /// Its priority (0: none).
    pub priority: u8,
    /// Deliveries made before this record was written (compaction carries the
    /// count over; 0 for a fresh publish).
    pub attempts: u32,
    /// The message.
    pub message: Message,
}

/// What a marks record says of the ids it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Acked, or discarded: gone from the queue.
    Settled,
    /// Handed to a consumer once more.
    Delivered,
}

/// Appends one framed message record to `out`.
pub fn encode_message(out: &mut Vec<u8>, record: &MessageRecord) {
    let encoded = record.message.encoded();
    let body_len = 1 + MESSAGE_FIXED + encoded.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_MESSAGE);
    out.extend_from_slice(&record.id.to_le_bytes());
    out.extend_from_slice(&record.published_ms.to_le_bytes());
    out.extend_from_slice(&record.deliver_at_ms.to_le_bytes());
    out.push(record.priority);
    out.extend_from_slice(&record.attempts.to_le_bytes());
    out.extend_from_slice(encoded);
    seal(out, start);
}

/// Appends one framed marks record listing `ids` to `out` (nothing for no ids).
pub fn encode_marks(out: &mut Vec<u8>, mark: Mark, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let start = out.len();
    out.extend_from_slice(&((1 + ids.len() * 8) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(match mark {
        Mark::Settled => KIND_SETTLED,
        Mark::Delivered => KIND_DELIVERED,
    });
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    seal(out, start);
}

fn seal(out: &mut [u8], start: usize) {
    let crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message.
    Message(MessageRecord),
    /// Marks on some ids.
    Marks(Mark, Vec<u64>),
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside the record's header or body.
    Truncated,
    /// The length is zero or past [`MAX_BODY_BYTES`].
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but the body is not a record this version knows.
    BadBody,
}

impl Damage {
    /// For logs and errors.
    pub fn describe(self) -> &'static str {
        match self {
            Damage::Truncated => "the file ends inside a record",
            Damage::BadLength => "a record length that cannot be",
            Damage::BadChecksum => "a record whose checksum does not match",
            Damage::BadBody => "a record of an unknown kind or shape",
        }
    }
}

/// The result of reading a file of records.
#[derive(Debug)]
pub struct Scan {
    /// Every record before the first damage, in file order.
    pub records: Vec<Record>,
    /// Bytes up to the end of the last good record.
    pub valid_len: usize,
    /// The first damage, if any: its offset and kind, and whether a good record
    /// follows it somewhere (then it is not a torn tail but damage inside).
    pub damage: Option<(usize, Damage, bool)>,
}

/// Reads `bytes` as a sequence of records.
pub fn scan(bytes: &Bytes) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match read_at(bytes, at) {
            Ok((record, next)) => {
                records.push(record);
                at = next;
            }
            Err(damage) => {
                let end = bytes.len().min(at + FOLLOW_WINDOW);
                let followed = (at + 1..end).any(|from| read_at(bytes, from).is_ok());
                return Scan {
                    records,
                    valid_len: at,
                    damage: Some((at, damage, followed)),
                };
            }
        }
    }
    Scan {
        records,
        valid_len: at,
        damage: None,
    }
}

/// The record at `at` and the offset after it.
fn read_at(bytes: &Bytes, at: usize) -> Result<(Record, usize), Damage> {
    let rest = &bytes[at..];
    if rest.len() < HEADER_BYTES {
        return Err(Damage::Truncated);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 || len > MAX_BODY_BYTES {
        return Err(Damage::BadLength);
    }
    if rest.len() < HEADER_BYTES + len {
        return Err(Damage::Truncated);
    }
    if !matches!(
        rest[HEADER_BYTES],
        KIND_MESSAGE | KIND_SETTLED | KIND_DELIVERED
    ) {
        // Checked before the checksum: scanning garbage stays cheap.
        return Err(Damage::BadBody);
    }
    let body = &rest[HEADER_BYTES..HEADER_BYTES + len];
    if crc32c::crc32c(body) != crc {
        return Err(Damage::BadChecksum);
    }
    let start = at + HEADER_BYTES;
    let record = parse_body(bytes.slice(start..start + len)).ok_or(Damage::BadBody)?;
    Ok((record, start + len))
}

fn parse_body(body: Bytes) -> Option<Record> {
    let u64_at = |at: usize| -> Option<u64> {
        body.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    match *body.first()? {
        KIND_MESSAGE => {
            if body.len() < 1 + MESSAGE_FIXED {
                return None;
            }
            let attempts = u32::from_le_bytes(body.get(26..30)?.try_into().ok()?);
            let message = Message::decode(body.slice(1 + MESSAGE_FIXED..), Opcode::Publish).ok()?;
            Some(Record::Message(MessageRecord {
                id: u64_at(1)?,
                published_ms: u64_at(9)?,
                deliver_at_ms: u64_at(17)?,
                priority: body[25],
                attempts,
                message,
            }))
        }
        kind @ (KIND_SETTLED | KIND_DELIVERED) => {
            if !(body.len() - 1).is_multiple_of(8) {
                return None;
            }
            let ids = (0..(body.len() - 1) / 8)
                .map(|index| u64_at(1 + index * 8))
                .collect::<Option<Vec<u64>>>()?;
            let mark = if kind == KIND_SETTLED {
                Mark::Settled
            } else {
                Mark::Delivered
            };
            Some(Record::Marks(mark, ids))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, payload: &str) -> MessageRecord {
        let headers = [tern_proto::Header::new("device", "d1")];
        MessageRecord {
            id,
            published_ms: 1_700_000_000_000 + id,
            deliver_at_ms: 0,
            priority: 3,
            attempts: 2,
            message: Message::encode("jobs.a", Some("reply.1"), &headers, payload.as_bytes())
                .expect("valid"),
        }
    }

    fn file() -> Bytes {
        let mut out = Vec::new();
        encode_message(&mut out, &record(1, "first"));
        encode_marks(&mut out, Mark::Delivered, &[1]);
        encode_message(&mut out, &record(2, "second"));
        encode_marks(&mut out, Mark::Settled, &[1, 2]);
        Bytes::from(out)
    }

    #[test]
    fn records_round_trip() {
        let scan = scan(&file());
        assert!(scan.damage.is_none());
        assert_eq!(
            scan.records,
            vec![
                Record::Message(record(1, "first")),
                Record::Marks(Mark::Delivered, vec![1]),
                Record::Message(record(2, "second")),
                Record::Marks(Mark::Settled, vec![1, 2]),
            ]
        );
    }

    #[test]
    fn a_file_cut_at_any_byte_of_its_last_record_keeps_the_others_and_is_a_torn_tail() {
        let whole = file();
        let last_start = {
            let mut out = Vec::new();
            encode_message(&mut out, &record(1, "first"));
            encode_marks(&mut out, Mark::Delivered, &[1]);
            encode_message(&mut out, &record(2, "second"));
            out.len()
        };
        for cut in last_start..whole.len() {
            let scan = scan(&whole.slice(..cut));
            assert_eq!(scan.records.len(), 3, "cut at {cut}");
            assert_eq!(scan.valid_len, last_start);
            if cut > last_start {
                let (offset, _, followed) = scan.damage.expect("a torn record");
                assert_eq!(offset, last_start);
                assert!(!followed, "nothing good follows a torn tail (cut at {cut})");
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected() {
        let whole = file();
        let good = scan(&whole).records;
        for byte in 0..whole.len() {
            for bit in 0..8 {
                let mut bytes = whole.to_vec();
                bytes[byte] ^= 1 << bit;
                let scan = scan(&Bytes::from(bytes));
                // Either the damage is found, or (a flip in a length that still
                // frames) fewer records come back — never a different record.
                assert!(
                    scan.damage.is_some(),
                    "flip of bit {bit} of byte {byte} went unnoticed"
                );
                for (read, original) in scan.records.iter().zip(&good) {
                    assert_eq!(read, original);
                }
            }
        }
    }

    #[test]
    fn damage_in_the_middle_is_told_from_a_torn_tail() {
        let mut bytes = file().to_vec();
        bytes[HEADER_BYTES + 3] ^= 0xff;
        let scan = scan(&Bytes::from(bytes));
        let (offset, damage, followed) = scan.damage.expect("damage");
        assert_eq!((offset, damage, followed), (0, Damage::BadChecksum, true));
    }
}
