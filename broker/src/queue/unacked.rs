//! A consumer's unacked deliveries, by delivery counter (the low 32 bits of a
//! delivery id). Counters are handed out in sequence, and acks come back mostly in
//! the same order, so the deliveries live in a window (a ring) indexed by their
//! place in that sequence: delivering and acking cost no hashing. A delivery held
//! while many after it are acked would stretch the window without bound; once the
//! window is more than twice as long as what it holds (plus [`WINDOW_SLACK`]), its
//! oldest entries move to a map, so memory stays proportional to what is unacked.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::QueuedMessage;

/// Counters run from 1 to `u32::MAX` (0 is never a queue delivery's counter) and
/// then start again at 1.
const COUNTER_SPAN: u64 = u32::MAX as u64;
/// Empty slots the window may hold beyond twice its deliveries before it spills.
const WINDOW_SLACK: usize = 1024;

/// The counter of the `sequence`-th delivery.
fn counter_of(sequence: u64) -> u32 {
    (sequence % COUNTER_SPAN) as u32 + 1
}

/// One consumer's unacked deliveries.
#[derive(Debug, Default)]
pub(super) struct Unacked {
    /// The sequence number of `window[0]`.
    first: u64,
    /// Deliveries from `first` on; `None` once settled.
    window: VecDeque<Option<QueuedMessage>>,
    /// Deliveries in `window`.
    in_window: usize,
    /// Older deliveries still unacked, spilled out of the window.
    spilled: FxHashMap<u32, QueuedMessage>,
}

impl Unacked {
    /// Deliveries not yet settled.
    pub(super) fn len(&self) -> usize {
        self.in_window + self.spilled.len()
    }

    /// The counter the next [`Unacked::push`] records. After `u32::MAX` deliveries
    /// counters repeat, and one that is still unacked then is skipped (a consumer
    /// holds at most its prefetch, far fewer).
    pub(super) fn next_counter(&mut self) -> u32 {
        loop {
            let counter = counter_of(self.first + self.window.len() as u64);
            // Nothing spilled (the usual case): no lookup on the delivery path.
            if self.spilled.is_empty() || !self.spilled.contains_key(&counter) {
                return counter;
            }
            self.window.push_back(None);
        }
    }

    /// Records the next delivery (the one [`Unacked::next_counter`] numbered);
    /// returns its counter.
    pub(super) fn push(&mut self, queued: QueuedMessage) -> u32 {
        let counter = self.next_counter();
        self.window.push_back(Some(queued));
        self.in_window += 1;
        self.spill();
        counter
    }

    /// Takes the delivery with `counter` out, if it is unacked.
    pub(super) fn take(&mut self, counter: u32) -> Option<QueuedMessage> {
        let Some(offset) = self.offset_in_window(counter) else {
            return self.spilled.remove(&counter);
        };
        let queued = self.window[offset].take();
        self.closed_slot();
        queued
    }

    /// Settles the delivery with `counter`, if it is unacked: the message is
    /// dropped where it lies (an ack does not move it out), after `settle` has seen
    /// it.
    pub(super) fn settle<T>(
        &mut self,
        counter: u32,
        settle: impl FnOnce(&QueuedMessage) -> T,
    ) -> Option<T> {
        let Some(offset) = self.offset_in_window(counter) else {
            return self.spilled.remove(&counter).map(|queued| settle(&queued));
        };
        let outcome = self.window[offset].as_ref().map(settle);
        self.window[offset] = None;
        self.closed_slot();
        outcome
    }

    /// Where `counter` lies in the window, when it is there and unacked.
    fn offset_in_window(&self, counter: u32) -> Option<usize> {
        if counter == 0 {
            return None;
        }
        let first_counter = u64::from(counter_of(self.first));
        let offset = (u64::from(counter) + COUNTER_SPAN - first_counter) % COUNTER_SPAN;
        let offset = usize::try_from(offset).ok()?;
        matches!(self.window.get(offset), Some(Some(_))).then_some(offset)
    }

    /// A slot of the window was just emptied: one fewer delivery, and settled
    /// slots at the front are dropped.
    fn closed_slot(&mut self) {
        self.in_window -= 1;
        while matches!(self.window.front(), Some(None)) {
            self.window.pop_front();
            self.first += 1;
        }
    }

    /// Moves the oldest entries into the map while the window is much longer than
    /// what it holds.
    fn spill(&mut self) {
        while self.window.len() > 2 * self.in_window + WINDOW_SLACK {
            if let Some(Some(queued)) = self.window.pop_front() {
                self.in_window -= 1;
                self.spilled.insert(counter_of(self.first), queued);
            }
            self.first += 1;
        }
        while matches!(self.window.front(), Some(None)) {
            self.window.pop_front();
            self.first += 1;
        }
    }

    /// Every unacked delivery, taken out (the consumer leaves).
    pub(super) fn into_messages(self) -> Vec<QueuedMessage> {
        let mut messages: Vec<QueuedMessage> = self.window.into_iter().flatten().collect();
        messages.extend(self.spilled.into_values());
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::Message;

    fn queued(order: u64) -> QueuedMessage {
        QueuedMessage {
            message: Message::new("q", "x").expect("valid"),
            order,
            redelivered: false,
            stamp: 0,
            published_ms: 0,
            attempts: 0,
        }
    }

    #[test]
    fn deliveries_are_taken_by_counter_in_any_order() {
        let mut unacked = Unacked::default();
        let counters: Vec<u32> = (0..100).map(|order| unacked.push(queued(order))).collect();
        assert_eq!(counters[0], 1);
        assert_eq!(unacked.len(), 100);
        assert_eq!(unacked.take(counters[50]).map(|q| q.order), Some(50));
        assert!(unacked.take(counters[50]).is_none(), "once only");
        assert_eq!(unacked.settle(counters[70], |q| q.order), Some(70));
        assert!(
            unacked.settle(counters[70], |q| q.order).is_none(),
            "once only"
        );
        assert!(unacked.take(counters[70]).is_none());
        assert!(unacked.take(0).is_none());
        assert!(unacked.take(5_000).is_none(), "never handed out");
        for (order, counter) in counters.iter().enumerate() {
            match order {
                50 | 70 => {}
                _ if order % 2 == 0 => {
                    assert_eq!(unacked.take(*counter).map(|q| q.order), Some(order as u64));
                }
                _ => assert_eq!(unacked.settle(*counter, |q| q.order), Some(order as u64)),
            }
        }
        assert_eq!(unacked.len(), 0);
        assert!(unacked.window.is_empty());
    }

    /// One delivery held while a million after it are acked: memory stays small,
    /// and the held one is still found.
    #[test]
    fn a_held_delivery_does_not_stretch_the_window() {
        let mut unacked = Unacked::default();
        let held = unacked.push(queued(0));
        for order in 1..1_000_000 {
            let counter = unacked.push(queued(order));
            assert!(unacked.take(counter).is_some());
        }
        assert!(unacked.window.len() <= 2 * unacked.in_window + WINDOW_SLACK + 1);
        assert_eq!(unacked.len(), 1);
        assert_eq!(unacked.settle(held, |q| q.order), Some(0), "found spilled");
        assert_eq!(unacked.len(), 0);
    }

    #[test]
    fn counters_wrap_skipping_zero_and_held_ones() {
        let mut unacked = Unacked {
            first: COUNTER_SPAN - 2,
            ..Unacked::default()
        };
        let a = unacked.push(queued(1));
        let b = unacked.push(queued(2));
        let c = unacked.push(queued(3));
        assert_eq!((a, b, c), (u32::MAX - 1, u32::MAX, 1));
        assert_eq!(unacked.take(c).map(|q| q.order), Some(3));
        assert_eq!(unacked.take(a).map(|q| q.order), Some(1));
        assert_eq!(unacked.take(b).map(|q| q.order), Some(2));
        let messages = {
            let mut unacked = Unacked::default();
            for order in 0..10 {
                unacked.push(queued(order));
            }
            unacked.into_messages()
        };
        assert_eq!(messages.len(), 10);
    }
}
