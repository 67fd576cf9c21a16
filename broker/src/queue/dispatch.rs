//! Handing ready messages to consumers: round-robin dispatch over the FIFO, and the
//! targeted fills of filtered mode.

use std::sync::atomic::Ordering;

use super::state::{compact, deliver, next_consumer_with_room, QueueState};
use super::Queue;
use super::QueuedMessage;

impl Queue {
    /// Consumer `index` may have room now (it joined, acked, nacked or got credit):
    /// hands it what it can take (in filtered mode only it, otherwise the whole
    /// queue dispatches as usual).
    pub(super) fn dispatch_to(&self, state: &mut QueueState, index: usize) {
        if state.filtered.is_some() {
            self.fill_consumer(state, index);
        } else {
            self.dispatch(state);
        }
    }

    /// Filtered mode: consumer `index` takes the oldest ready messages of its class
    /// while it has room.
    pub(super) fn fill_consumer(&self, state: &mut QueueState, index: usize) {
        let Some(class) = state
            .consumers
            .get(index)
            .and_then(|consumer| consumer.class)
        else {
            return;
        };
        while !self.draining.load(Ordering::Acquire) && state.consumers[index].has_room() {
            let Some(queued) = state
                .filtered
                .as_mut()
                .and_then(|ready| ready.take_for(class))
            else {
                return;
            };
            if let Err(queued) = deliver(state, index, queued) {
                state.store_ready(queued, true);
                return;
            }
        }
    }

    /// Filtered mode: hands a new message to a consumer with room of the first of
    /// `classes` that has nothing waiting (which would be older), round-robin; or
    /// gives it back to be stored.
    pub(super) fn deliver_direct(
        &self,
        state: &mut QueueState,
        classes: &[u32],
        queued: QueuedMessage,
        draining: bool,
    ) -> Result<(), QueuedMessage> {
        if draining {
            return Err(queued);
        }
        for class in classes {
            let Some(ready) = state.filtered.as_mut() else {
                return Err(queued);
            };
            if ready.has_waiting(*class) {
                continue;
            }
            for _ in 0..ready.member_count(*class) {
                let Some(index) = state
                    .filtered
                    .as_mut()
                    .and_then(|ready| ready.next_member(*class))
                else {
                    break;
                };
                if state
                    .consumers
                    .get(index)
                    .is_some_and(|consumer| consumer.has_room())
                {
                    return deliver(state, index, queued);
                }
            }
        }
        Err(queued)
    }

    /// Filtered mode: a message for `classes` became ready; their consumers with
    /// room, round-robin within each class, take what they can.
    pub(super) fn fill_classes(&self, state: &mut QueueState, classes: &[u32]) {
        for class in classes {
            // Each consumer of the class at most once, starting after the last one
            // served; no allocation per message.
            let members = state
                .filtered
                .as_ref()
                .map_or(0, |ready| ready.member_count(*class));
            for _ in 0..members {
                let Some(ready) = state.filtered.as_mut() else {
                    return;
                };
                let Some(index) = ready.next_member(*class) else {
                    break;
                };
                if !state
                    .consumers
                    .get(index)
                    .is_some_and(|consumer| consumer.has_room())
                {
                    continue;
                }
                self.fill_consumer(state, index);
                if state.ready_is_empty() {
                    return;
                }
            }
        }
    }

    /// Hands ready messages to consumers with room, oldest first, round-robin.
    /// Stops while the broker shuts down: nothing new goes out, acks still come in.
    pub(super) fn dispatch(&self, state: &mut QueueState) {
        while !state.store.is_empty() && !self.draining.load(Ordering::Acquire) {
            let Some(index) = next_consumer_with_room(state) else {
                return;
            };
            let Some(queued) = state.store.pop_front() else {
                return;
            };
            if let Err(queued) = deliver(state, index, queued) {
                state.store.push_front(compact(queued));
            }
        }
    }
}
