//! What a benchmark receiver checks about every message: the stamp each one
//! carries (publisher, sequence number, send time), which ones arrived, how often,
//! in which order, and how long they took.

use hdrhistogram::Histogram;

/// Bytes at the start of every benchmark payload: publisher id (u32), sequence
/// number (u64) and send time in nanoseconds since the run's epoch (u64), all
/// big-endian.
pub const STAMP_BYTES: usize = 20;

/// Writes the stamp into the first [`STAMP_BYTES`] of `payload`.
pub fn write_stamp(payload: &mut [u8], publisher: u32, sequence: u64, sent_ns: u64) {
    payload[0..4].copy_from_slice(&publisher.to_be_bytes());
    payload[4..12].copy_from_slice(&sequence.to_be_bytes());
    payload[12..20].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads a stamp: `(publisher, sequence, sent_ns)`, or `None` for a payload too
/// short to carry one.
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
    let sequence = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((publisher, sequence, sent_ns))
}

/// A latency histogram in nanoseconds, 1 ns to 10 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static histogram bounds are valid")
}

/// One publisher's sequence numbers as seen by one receiver.
#[derive(Debug, Default, Clone)]
struct Sequences {
    /// Bit `n` is set once sequence `n` arrived.
    seen: Vec<u64>,
    /// Highest sequence seen so far.
    highest: Option<u64>,
}

impl Sequences {
    /// Records `sequence`; returns (duplicate, out of order).
    fn record(&mut self, sequence: u64) -> (bool, bool) {
        let (word, bit) = ((sequence / 64) as usize, sequence % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let duplicate = self.seen[word] & (1 << bit) != 0;
        self.seen[word] |= 1 << bit;
        let out_of_order = !duplicate && self.highest.is_some_and(|highest| sequence < highest);
        if self.highest.is_none_or(|highest| sequence > highest) {
            self.highest = Some(sequence);
        }
        (duplicate, out_of_order)
    }

    fn unique(&self) -> u64 {
        self.seen
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Sequences seen by both.
    fn overlap(&self, other: &Sequences) -> u64 {
        self.seen
            .iter()
            .zip(&other.seen)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    fn union(&mut self, other: &Sequences) {
        if other.seen.len() > self.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        for (word, theirs) in self.seen.iter_mut().zip(&other.seen) {
            *word |= theirs;
        }
    }
}

/// Everything one receiver saw.
#[derive(Debug, Clone)]
pub struct Tracker {
    publishers: Vec<Sequences>,
    /// Latency of every message, nanoseconds.
    pub latency: Histogram<u64>,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages that arrived after a later one from the same publisher.
    pub out_of_order: u64,
    /// Payloads without a valid stamp.
    pub malformed: u64,
}

impl Tracker {
    /// A tracker for messages from `publishers` publishers.
    pub fn new(publishers: usize) -> Self {
        Tracker {
            publishers: vec![Sequences::default(); publishers],
            latency: latency_histogram(),
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            malformed: 0,
        }
    }

    /// Records one received payload at `now_ns` (same epoch as the stamps).
    pub fn record(&mut self, payload: &[u8], now_ns: u64) {
        self.received += 1;
        let Some((publisher, sequence, sent_ns)) = read_stamp(payload) else {
            self.malformed += 1;
            return;
        };
        let Some(sequences) = self.publishers.get_mut(publisher as usize) else {
            self.malformed += 1;
            return;
        };
        let (duplicate, out_of_order) = sequences.record(sequence);
        self.duplicated += u64::from(duplicate);
        self.out_of_order += u64::from(out_of_order);
        let _ = self.latency.record(now_ns.saturating_sub(sent_ns).max(1));
    }

    /// Distinct messages received.
    pub fn unique(&self) -> u64 {
        self.publishers.iter().map(Sequences::unique).sum()
    }

    /// Merges competing consumers' trackers: a message two consumers both got is
    /// a duplicate (a queue promises each message to one consumer).
    pub fn merge_competing(trackers: &[Tracker]) -> Tracker {
        let publishers = trackers.first().map_or(0, |first| first.publishers.len());
        let mut merged = Tracker::new(publishers);
        for tracker in trackers {
            for (index, sequences) in tracker.publishers.iter().enumerate() {
                merged.duplicated += merged.publishers[index].overlap(sequences);
                merged.publishers[index].union(sequences);
            }
            let _ = merged.latency.add(&tracker.latency);
            merged.received += tracker.received;
            merged.duplicated += tracker.duplicated;
            merged.out_of_order += tracker.out_of_order;
            merged.malformed += tracker.malformed;
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(publisher: u32, sequence: u64) -> Vec<u8> {
        let mut payload = vec![0; 32];
        write_stamp(&mut payload, publisher, sequence, 5);
        payload
    }

    #[test]
    fn counts_duplicates_gaps_and_reordering() {
        let mut tracker = Tracker::new(2);
        for sequence in [0, 1, 3, 2, 3] {
            tracker.record(&payload(0, sequence), 10);
        }
        tracker.record(&payload(1, 0), 10);
        tracker.record(&[1, 2, 3], 10);
        assert_eq!(tracker.received, 7);
        assert_eq!(tracker.unique(), 5);
        assert_eq!(tracker.duplicated, 1);
        assert_eq!(tracker.out_of_order, 1, "2 after 3");
        assert_eq!(tracker.malformed, 1);
        assert_eq!(tracker.latency.len(), 6);
    }

    #[test]
    fn competing_consumers_that_share_a_message_count_a_duplicate() {
        let mut first = Tracker::new(1);
        let mut second = Tracker::new(1);
        first.record(&payload(0, 0), 1);
        first.record(&payload(0, 2), 1);
        second.record(&payload(0, 1), 1);
        second.record(&payload(0, 2), 1);
        let merged = Tracker::merge_competing(&[first, second]);
        assert_eq!(merged.unique(), 3);
        assert_eq!(merged.duplicated, 1);
        assert_eq!(merged.received, 4);
    }
}
