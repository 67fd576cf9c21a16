//! Queue administration on the wire: QUEUE_LIST, QUEUE_PURGE and QUEUE_DELETE
//! (`tern queue ls|purge|delete`). Each is answered in order, like every frame:
//! QUEUE_INFO frames then QUEUE_OK, or an ERROR whose `context` is the request id.

use bytestring::ByteString;
use tern_proto::{Frame, QueueInfo};

use super::Session;
use crate::broker::Refusal;

impl Session {
    /// One QUEUE_INFO per queue (sorted by name), then QUEUE_OK with the count. At
    /// most `MAX_QUEUES` frames; like any answers, the session stops reading the
    /// client's frames while too many of them wait for it to read.
    pub(super) fn on_queue_list(&mut self, request_id: u64) {
        let mut queues = self.broker.queues();
        queues.retain(|queue| self.may_see_queue(queue.name()));
        queues.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        for queue in &queues {
            let depth = queue.depth();
            self.outbox.push_control(Frame::QueueInfo(QueueInfo {
                request_id,
                name: queue.name().clone(),
                pattern: queue.pattern().clone(),
                ready: depth.ready as u64,
                unacked: depth.unacked as u64,
                consumers: u32::try_from(depth.consumers).unwrap_or(u32::MAX),
                bytes: depth.bytes,
            }));
        }
        self.outbox.push_control(Frame::QueueOk {
            request_id,
            count: queues.len() as u64,
        });
    }

    /// Removes a queue's ready messages (a consumer's unacked ones stay with it).
    pub(super) fn on_queue_purge(&mut self, request_id: u64, queue: &ByteString) {
        let outcome = self
            .require_role(self.role.can_subscribe(), "purge a queue")
            .and_then(|()| self.check_administer(queue, "purge"))
            .and_then(|()| self.broker.purge_queue(queue));
        self.answer_admin(request_id, outcome);
    }

    /// Deletes a queue; refused while consumers are attached unless `force`.
    pub(super) fn on_queue_delete(&mut self, request_id: u64, queue: &ByteString, force: bool) {
        let outcome = self
            .require_role(self.role.can_subscribe(), "delete a queue")
            .and_then(|()| self.check_administer(queue, "delete"))
            .and_then(|()| self.broker.delete_queue(queue, force));
        self.answer_admin(request_id, outcome);
    }

    fn answer_admin(&self, request_id: u64, outcome: Result<u64, Refusal>) {
        match outcome {
            Ok(count) => self
                .outbox
                .push_control(Frame::QueueOk { request_id, count }),
            Err(refusal) => self.send_error(refusal.code, request_id, refusal.message),
        }
    }
}
