//! The bounded hand-off from the connection task to one subscription, in batches.
//!
//! The connection task decodes everything one socket read brought and hands each
//! subscription its share with one lock ([`HandoffSender::send_all`]); the
//! subscription takes everything waiting with one lock and then works through its
//! own batch without touching shared state ([`HandoffReceiver::poll_recv`]). Per
//! message that is a move into a `Vec` and a pop from a `VecDeque`, instead of a
//! channel's send and receive.
//!
//! Bounds: at most `capacity` items, and at most `byte_capacity` bytes of them (by
//! [`Weighed::weight`]; one item is always let through, however large), wait in the
//! shared buffer; when it is full the connection task waits (it stops reading the
//! socket, so the broker buffers and then applies its own policy). The subscription
//! holds at most one taken batch besides, so at most twice those bounds are
//! buffered per subscription.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What an item weighs against the hand-off's byte bound.
pub(crate) trait Weighed {
    /// The item's size in bytes (what it holds in memory, roughly).
    fn weight(&self) -> usize;
}

impl Weighed for tern_proto::Message {
    fn weight(&self) -> usize {
        self.payload().len()
    }
}

/// A new hand-off holding at most `capacity` items and `byte_capacity` bytes (each
/// at least 1) in its shared buffer.
pub(crate) fn handoff<T: Weighed>(
    capacity: usize,
    byte_capacity: usize,
) -> (HandoffSender<T>, HandoffReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
            byte_capacity: byte_capacity.max(1),
            senders: 1,
            receiver_gone: false,
            receiver_waker: None,
            sender_waker: None,
        }),
    });
    (
        HandoffSender {
            shared: shared.clone(),
        },
        HandoffReceiver {
            shared,
            taken: VecDeque::new(),
        },
    )
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Weight of `items`.
    bytes: usize,
    capacity: usize,
    byte_capacity: usize,
    /// Live sender handles; the receiver ends when the last is gone.
    senders: usize,
    receiver_gone: bool,
    receiver_waker: Option<Waker>,
    /// One task sends (the connection's); it waits here for room.
    sender_waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The connection task's end.
#[derive(Debug)]
pub(crate) struct HandoffSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for HandoffSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        HandoffSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for HandoffSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let waker = (state.senders == 0)
            .then(|| state.receiver_waker.take())
            .flatten();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T: Weighed> HandoffSender<T> {
    /// Moves every item of `items` (in order) to the receiver, waiting for room when
    /// the shared buffer is full. When the receiver is gone the items are discarded.
    /// Leaves `items` empty, its allocation kept for the next batch.
    pub(crate) async fn send_all(&self, items: &mut Vec<T>) {
        poll_fn(|context| self.poll_send_all(context, items)).await
    }

    fn poll_send_all(&self, context: &mut Context<'_>, items: &mut Vec<T>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            items.clear();
            return Poll::Ready(());
        }
        let room = state.capacity.saturating_sub(state.items.len());
        let mut moved = 0;
        let mut bytes = state.bytes;
        // Checked before adding: one item always fits an empty buffer, however large.
        for item in items.iter().take(room) {
            if bytes >= state.byte_capacity {
                break;
            }
            bytes += item.weight();
            moved += 1;
        }
        state.bytes = bytes;
        state.items.extend(items.drain(..moved));
        let waker = if moved > 0 {
            state.receiver_waker.take()
        } else {
            None
        };
        let done = items.is_empty();
        if !done {
            match &mut state.sender_waker {
                Some(waker) if waker.will_wake(context.waker()) => {}
                slot => *slot = Some(context.waker().clone()),
            }
        }
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The subscription's end.
#[derive(Debug)]
pub(crate) struct HandoffReceiver<T> {
    shared: Arc<Shared<T>>,
    /// The batch being worked through, taken from the shared buffer in one go.
    taken: VecDeque<T>,
}

impl<T> HandoffReceiver<T> {
    /// The next item; `None` once every sender is gone and everything was received.
    pub(crate) fn poll_recv(&mut self, context: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.taken.pop_front() {
            return Poll::Ready(Some(item));
        }
        let mut state = self.shared.lock();
        if state.items.is_empty() {
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut state.receiver_waker {
                Some(waker) if waker.will_wake(context.waker()) => {}
                slot => *slot = Some(context.waker().clone()),
            }
            return Poll::Pending;
        }
        Poll::Ready(take_batch(&mut self.taken, state))
    }

    /// The next item if one is waiting, without registering for a wake-up; `None`
    /// when none is (or every sender is gone).
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        if let Some(item) = self.taken.pop_front() {
            return Some(item);
        }
        let state = self.shared.lock();
        if state.items.is_empty() {
            return None;
        }
        take_batch(&mut self.taken, state)
    }

    /// The next item (see [`HandoffReceiver::poll_recv`]).
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|context| self.poll_recv(context)).await
    }
}

/// Moves everything waiting into `taken` (the caller checked there is something),
/// makes room for a waiting sender, and returns the first item.
fn take_batch<T>(taken: &mut VecDeque<T>, mut state: MutexGuard<'_, State<T>>) -> Option<T> {
    std::mem::swap(&mut state.items, taken);
    state.bytes = 0;
    let waker = state.sender_waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
    taken.pop_front()
}

impl<T> Drop for HandoffReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let items = std::mem::take(&mut state.items);
        state.bytes = 0;
        let waker = state.sender_waker.take();
        drop(state);
        drop(items);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test items weigh their value.
    impl Weighed for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    #[tokio::test]
    async fn items_arrive_once_in_order_and_a_full_buffer_makes_the_sender_wait() {
        let (sender, mut receiver) = handoff::<u32>(3, usize::MAX);
        let producer = tokio::spawn(async move {
            let mut batch = Vec::new();
            for chunk in (0..1000u32).collect::<Vec<_>>().chunks(7) {
                batch.extend_from_slice(chunk);
                sender.send_all(&mut batch).await;
                assert!(batch.is_empty());
            }
        });
        let mut received = Vec::new();
        while let Some(item) = receiver.recv().await {
            assert!(
                receiver.taken.len() < 3,
                "never more than the capacity per batch"
            );
            received.push(item);
        }
        producer.await.expect("producer");
        assert_eq!(received, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn try_recv_takes_what_waits_and_never_waits() {
        let (sender, mut receiver) = handoff::<u32>(4, usize::MAX);
        assert_eq!(receiver.try_recv(), None);
        sender.send_all(&mut vec![1, 2]).await;
        assert_eq!(receiver.try_recv(), Some(1));
        assert_eq!(receiver.try_recv(), Some(2));
        assert_eq!(receiver.try_recv(), None);
        drop(sender);
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn a_gone_receiver_releases_a_waiting_sender() {
        let (sender, receiver) = handoff::<u32>(1, usize::MAX);
        let mut batch = vec![1, 2, 3];
        let waiting = tokio::spawn(async move {
            sender.send_all(&mut batch).await;
            batch
        });
        tokio::task::yield_now().await;
        drop(receiver);
        assert!(waiting.await.expect("sender").is_empty());
    }

    #[tokio::test]
    async fn the_receiver_ends_when_the_last_sender_clone_is_gone() {
        let (sender, mut receiver) = handoff::<u32>(4, usize::MAX);
        let clone = sender.clone();
        sender.send_all(&mut vec![1]).await;
        drop(sender);
        assert_eq!(receiver.recv().await, Some(1));
        drop(clone);
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn the_byte_bound_holds_back_heavy_items_but_always_lets_one_through() {
        let (sender, mut receiver) = handoff::<u32>(100, 10);
        let producer = tokio::spawn(async move {
            sender.send_all(&mut vec![4, 4, 4, 50, 1]).await;
        });
        let mut batches = Vec::new();
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            batch.extend(receiver.taken.drain(..));
            batches.push(batch);
        }
        producer.await.expect("producer");
        // 4+4+4 reaches the bound; 50 goes alone into an empty buffer.
        assert_eq!(batches.concat(), vec![4, 4, 4, 50, 1]);
        assert!(
            batches
                .iter()
                .all(|batch| batch.len() == 1 || batch.iter().sum::<u32>() <= 12),
            "{batches:?}"
        );
        assert!(
            batches.iter().any(|batch| batch == &vec![50]),
            "{batches:?}"
        );
    }
}
