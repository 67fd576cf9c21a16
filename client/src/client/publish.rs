//! Publishing: a PUBLISH is encoded from borrowed fields straight into the
//! outgoing buffer (no allocation per message); a full buffer makes the publisher
//! wait for the writer (backpressure).

use std::sync::atomic::Ordering;

use tern_proto::subject::validate_subject;
use tern_proto::{codec, LENGTH_PREFIX_BYTES};

use super::inner::{Inner, Pending};
use crate::error::ClientError;
use crate::message::OutgoingMessage;

/// The fields of a PUBLISH, borrowed: encoded straight into the write buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct PublishParts<'a> {
    pub(super) subject: &'a str,
    pub(super) reply_to: Option<&'a str>,
    pub(super) headers: &'a [tern_proto::Header],
    pub(super) payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    pub(super) fn new(subject: &'a str, payload: &'a [u8]) -> Self {
        PublishParts {
            subject,
            reply_to: None,
            headers: &[],
            payload,
        }
    }

    pub(super) fn of(message: &'a OutgoingMessage) -> Self {
        PublishParts {
            subject: &message.subject,
            reply_to: message.reply_to.as_deref(),
            headers: &message.headers,
            payload: &message.payload,
        }
    }
}

impl Inner {
    /// Encodes a PUBLISH into the outgoing buffer, waiting for room if it is full.
    pub(super) async fn write_publish(
        &self,
        message: PublishParts<'_>,
        pending: Option<Pending>,
    ) -> Result<(), ClientError> {
        if let Some(reply_to) = message.reply_to {
            validate_subject(reply_to)?;
        }
        let mut pending = pending;
        loop {
            // Fast path: room in the buffer (the common case) costs one lock.
            if self.try_encode_publish(&message, &mut pending)? {
                return Ok(());
            }
            // Full: register for the writer's wake-up before checking again, so a
            // wake-up between the check and the wait is not lost.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.try_encode_publish(&message, &mut pending)? {
                return Ok(());
            }
            room.await;
        }
    }

    /// Encodes the publish if the buffer has room; `Ok(false)` when it is full.
    pub(super) fn try_encode_publish(
        &self,
        message: &PublishParts<'_>,
        pending: &mut Option<Pending>,
    ) -> Result<bool, ClientError> {
        let mut state = self.lock_state();
        if state.last_subject != message.subject {
            validate_subject(message.subject)?;
            state.last_subject.clear();
            state.last_subject.push_str(message.subject);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if state.buffer.len() >= self.options.max_pending_bytes {
            return Ok(false);
        }
        let sequence = if pending.is_some() {
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            sequence
        } else {
            0
        };
        let max = state
            .server
            .as_ref()
            .map_or(tern_proto::DEFAULT_MAX_FRAME_BYTES, |server| {
                server.max_frame_bytes
            });
        let start = state.buffer.len();
        codec::encode_publish(
            &mut state.buffer,
            sequence,
            message.subject,
            message.reply_to,
            message.headers,
            message.payload,
        )?;
        let size = state.buffer.len() - start;
        if size - LENGTH_PREFIX_BYTES > max as usize {
            state.buffer.truncate(start);
            return Err(ClientError::TooLarge { size, max });
        }
        if let Some(pending) = pending.take() {
            state.pending.insert(sequence, pending);
        }
        let wake = std::mem::take(&mut state.writer_idle);
        drop(state);
        if wake {
            self.wake_writer.notify_one();
        }
        Ok(true)
    }
}
