//! This connection's part of the shutdown sequence (the whole sequence is in
//! `server/drain.rs`): GOODBYE, no new publishes or subscriptions, acks and NACKs
//! still taken, PING still answered; the session closes as soon as it holds no
//! unacked delivery, or when the grace period ends.

use std::time::Duration;

use tern_proto::{ErrorCode, Frame, Goodbye};

use super::subscriptions::Subscription;
use super::Session;
use crate::broker::Refusal;

impl Session {
    /// Sends GOODBYE and stops taking new work.
    pub(super) fn begin_drain(&mut self, grace: Duration) {
        self.draining = true;
        self.outbox.push_control(Frame::Goodbye(Goodbye {
            code: ErrorCode::ShuttingDown.as_u16(),
            message: format!(
                "server shutting down; unacked deliveries may be acked for {} s",
                grace.as_secs()
            )
            .into(),
        }));
    }

    /// `SHUTTING_DOWN` for a publish or subscribe once draining.
    pub(super) fn refuse_new_work_while_draining(&self) -> Result<(), Refusal> {
        if self.draining {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    /// True when this connection holds no unacked queue delivery.
    pub(super) fn nothing_to_settle(&self) -> bool {
        self.subscriptions
            .iter()
            .all(|(sid, subscription)| match subscription {
                Subscription::Broadcast { .. } => true,
                Subscription::Queue { queue } => queue.unacked_for(self.id, *sid) == 0,
            })
    }
}
