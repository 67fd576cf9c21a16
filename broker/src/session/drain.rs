//! This connection's part of the shutdown sequence (the whole sequence is in
//! `server/drain.rs`): GOODBYE, no new publishes or subscriptions, acks and NACKs
//! still taken, PING still answered; the session closes as soon as it holds no
//! unacked delivery, having answered every frame that has arrived, or when the grace
//! period ends.

use std::time::Duration;

use tern_proto::{ErrorCode, Frame, Goodbye};

use super::subscriptions::Subscription;
use super::{Processed, Session};
use crate::broker::Refusal;
use crate::close_reason::CloseReason;
use crate::transport::{FrameReader, ReadSource};

/// Reads a draining connection that holds nothing makes before it closes: enough
/// for every frame a client has in flight (1 MiB at the largest reads), bounded so
/// a client that keeps sending cannot hold the connection open.
const FINAL_READS: usize = 4;

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

    /// The connection holds nothing to settle: before closing, answer every frame
    /// that has already arrived (publishes get `SHUTTING_DOWN`), reading what the
    /// socket holds without waiting for more (PROTOCOL.md § 5).
    pub(super) async fn answer_what_has_arrived<R: ReadSource>(
        &mut self,
        reader: &mut FrameReader<R>,
    ) -> CloseReason {
        for _ in 0..FINAL_READS {
            // Cancel-safe: what is not read now stays in the socket.
            match tokio::time::timeout(Duration::ZERO, reader.fill()).await {
                Ok(Ok(read)) if read > 0 => {}
                _ => break,
            }
            match self.process_buffered(reader) {
                // Everything read is answered; read again for what followed it.
                Processed::Drained | Processed::Close(CloseReason::ShutDown) => {}
                Processed::Close(reason) => {
                    self.flush_counters();
                    return reason;
                }
                // The client reads none of its answers: stop here.
                Processed::Blocked => break,
            }
        }
        self.flush_counters();
        CloseReason::ShutDown
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
        self.owed_confirms() == 0
            && self
                .subscriptions
                .iter()
                .all(|(sid, subscription)| match subscription {
                    Subscription::Broadcast { .. } => true,
                    Subscription::Queue { queue } => queue.unacked_for(self.id, *sid) == 0,
                })
    }
}
