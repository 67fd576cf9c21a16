//! The session's frame handlers: every complete frame in the read buffer is handled
//! before the next read; each client frame has one handler here (subscriptions in
//! `subscriptions.rs`).

use crate::transport::ReadSource;
use bytestring::ByteString;
use tern_proto::subject::{validate_subject, SubjectError};
use tern_proto::{ErrorCode, Frame, Publish, Role};

use super::access::publish_denied;
use super::route_cache::Lookup;
use super::subscriptions::Subscription;
use super::{Processed, Session};
use crate::broker::Refusal;
use crate::close_reason::CloseReason;
use crate::config::MAX_PREFETCH;
use crate::queue::{delivery_sid, QueueError};
use crate::stats::Stats;
use crate::store::PendingConfirm;
use crate::transport::FrameReader;
use std::sync::Arc;

impl Session {
    /// Handles the complete frames already buffered, stopping early when the
    /// client's unread answers reach the limit; then wakes the writers of the
    /// subscribers it delivered to (once each per batch).
    pub(super) fn process_buffered<R: ReadSource>(
        &mut self,
        reader: &mut FrameReader<R>,
    ) -> Processed {
        let processed = self.process_frames(reader);
        self.flush_batches();
        self.touched.wake_writers();
        processed
    }

    fn process_frames<R: ReadSource>(&mut self, reader: &mut FrameReader<R>) -> Processed {
        self.next_stamp = self.broker.stamp_now();
        loop {
            if !self.outbox.has_control_room() {
                return Processed::Blocked;
            }
            // Matched by reference: a frame is not moved on its way to its handler.
            match &reader.next_buffered() {
                Ok(Some(frame)) => self.handle(frame),
                Ok(None) => {
                    self.flush_batches();
                    // Draining: every frame that has arrived is answered first.
                    if self.draining && self.nothing_to_settle() {
                        return Processed::Close(CloseReason::ShutDown);
                    }
                    return Processed::Drained;
                }
                Err(error) if error.is_recoverable() => {
                    self.send_error(error.error_code(), 0, error.to_string())
                }
                Err(error) => {
                    let code = error.error_code();
                    self.send_error(code, 0, error.to_string());
                    return Processed::Close(CloseReason::ProtocolViolation(code));
                }
            }
            if !self.touched.pressure.is_empty() {
                // A subscriber's buffer is over half full: let it drain before the
                // rest of this batch (the run loop comes back for it).
                return Processed::Drained;
            }
        }
    }

    fn handle(&mut self, frame: &Frame) {
        let batched = match frame {
            Frame::Publish(publish) => publish.sequence == 0,
            Frame::Ack { .. } => true,
            _ => false,
        };
        if !batched {
            // Whatever this frame does sees the batch's publishes and acks done.
            self.flush_batches();
        }
        match frame {
            Frame::Publish(publish) => self.on_publish(publish),
            Frame::Subscribe(subscribe) => self.on_subscribe(subscribe, None),
            Frame::SubscribeFiltered(filtered) => self.on_subscribe_filtered(filtered),
            Frame::Unsubscribe { sid } => self.on_unsubscribe(*sid),
            Frame::Ack { delivery_id } => self.on_settle(*delivery_id, None),
            Frame::Nack {
                delivery_id,
                requeue,
            } => self.on_settle(*delivery_id, Some(*requeue)),
            Frame::Credit { sid, prefetch } => self.on_credit(*sid, *prefetch),
            Frame::QueueList { request_id } => self.on_queue_list(*request_id),
            Frame::QueuePurge { request_id, queue } => self.on_queue_purge(*request_id, queue),
            Frame::QueueDelete {
                request_id,
                queue,
                force,
            } => self.on_queue_delete(*request_id, queue, *force),
            Frame::Ping => self.outbox.push_control(Frame::Pong),
            Frame::Pong => {}
            Frame::Hello(_) => self.send_error(
                ErrorCode::UnexpectedFrame,
                0,
                "HELLO was already received on this connection",
            ),
            other => self.send_error(
                ErrorCode::UnexpectedFrame,
                0,
                format!("{:?} is a server-to-client frame", other.opcode()),
            ),
        }
    }

    pub(super) fn send_error(&self, code: ErrorCode, context: u64, message: impl Into<ByteString>) {
        self.outbox
            .push_control(Frame::error(code, context, message));
    }

    pub(super) fn require_role(&self, allowed: bool, action: &str) -> Result<(), Refusal> {
        if allowed {
            return Ok(());
        }
        let role = match self.role {
            Role::Producer => "PRODUCER",
            Role::Consumer => "CONSUMER",
            Role::Both => "BOTH",
        };
        Err(Refusal::new(
            ErrorCode::PermissionDenied,
            format!("a {role} connection may not {action}"),
        ))
    }

    fn on_publish(&mut self, publish: &Publish) {
        let sequence = publish.sequence;
        // With a store, a confirmed publish's answer may wait for the disk; it is
        // made here and held by every durable queue that takes the message.
        let confirm = match self.broker.store() {
            Some(_) if sequence != 0 => Some(PendingConfirm::new(
                self.outbox.clone(),
                sequence,
                self.owed_confirms.get_or_insert_with(Arc::default).clone(),
            )),
            _ => None,
        };
        let outcome = self.check_publish_allowed().and_then(|()| {
            let message = &publish.message;
            let subject = message.subject();
            let rules = self
                .access
                .as_ref()
                .map(|access| &access.permissions().publish);
            let routes = match self.routes.lookup(subject, &self.broker, rules) {
                Ok(routes) => routes,
                Err(Lookup::Invalid(error)) => return Err(subject_refusal(error)),
                Err(Lookup::Denied) => {
                    publish_denied(&self.broker, &self.outbox, self.access.as_deref(), subject)?;
                    Arc::new(self.broker.routes_for(subject))
                }
            };
            let reply_to = message.reply_to();
            if let Some(reply_to) = reply_to {
                validate_subject(reply_to).map_err(|error| {
                    Refusal::new(error.error_code(), format!("reply-to: {error}"))
                })?;
            }
            // Routed borrowed from the decoded frame: nothing is moved or counted
            // per delivery; each subscriber's buffer gets its encoded copy.
            let stamp = std::mem::take(&mut self.next_stamp);
            self.touched.defer_queues = sequence == 0;
            self.broker.publish(
                &routes,
                message,
                reply_to.is_some(),
                stamp,
                &mut self.touched,
                confirm.as_ref(),
            )
        });
        if let Some(confirm) = confirm {
            return self.answer_deferred(confirm, outcome);
        }
        match outcome {
            Ok(()) => {
                self.published += 1;
                if sequence != 0 {
                    self.outbox.push_control(Frame::PublishOk { sequence });
                }
            }
            Err(refusal) => {
                self.broker.stats().count_publish_error(refusal.code);
                if sequence == 0 {
                    self.send_error(refusal.code, 0, refusal.message);
                } else {
                    self.outbox
                        .push_control(Frame::PublishError(tern_proto::PublishError {
                            sequence,
                            code: refusal.code.as_u16(),
                            message: refusal.message.into(),
                        }));
                }
            }
        }
    }

    /// Answers a confirmed publish on a broker with a store: at once when nothing
    /// waits for the disk, else after what does (answers stay in publish order).
    fn answer_deferred(&mut self, confirm: Arc<PendingConfirm>, outcome: Result<(), Refusal>) {
        match outcome {
            Ok(()) => self.published += 1,
            Err(refusal) => {
                self.broker.stats().count_publish_error(refusal.code);
                confirm.fail(refusal.code, refusal.message);
            }
        }
        if confirm.held_only_by_caller() && self.owed_confirms() > 1 {
            if let Some(store) = self.broker.store() {
                store.barrier(&confirm);
            }
        }
        confirm.release();
    }

    /// Stores this read batch's fire-and-forget queue publishes and settles its
    /// acks (one lock per queue), reporting their refusals.
    pub(super) fn flush_batches(&mut self) {
        let Some(deferred) = self.touched.deferred.as_mut() else {
            return;
        };
        if deferred.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut deferred.acks.entries);
        if !deferred.queued.is_empty() {
            for refusal in self.broker.flush_queue_batch(&mut self.touched) {
                self.broker.stats().count_publish_error(refusal.code);
                self.send_error(refusal.code, 0, refusal.message);
            }
        }
        let mut unknown = Vec::new();
        for (queue, ids) in acks {
            queue.ack_many(self.id, &ids, &mut unknown);
            for delivery_id in unknown.drain(..) {
                self.send_error(
                    ErrorCode::UnknownDelivery,
                    delivery_id,
                    QueueError::UnknownDelivery(delivery_id).to_string(),
                );
            }
        }
    }

    fn check_publish_allowed(&self) -> Result<(), Refusal> {
        self.require_role(self.role.can_publish(), "publish")?;
        self.refuse_new_work_while_draining()
    }

    fn on_settle(&mut self, delivery_id: u64, nack: Option<bool>) {
        if let Err(refusal) = self.require_role(self.role.can_subscribe(), "acknowledge") {
            return self.send_error(refusal.code, delivery_id, refusal.message);
        }
        let sid = delivery_sid(delivery_id);
        if nack.is_none() {
            if let Some(Subscription::Queue { queue }) = self.subscriptions.get(&sid) {
                // Settled with the batch's other acks, under one lock.
                self.touched.deferred().acks.push(queue, delivery_id);
                return;
            }
        }
        let result = match self.subscriptions.get(&sid) {
            Some(Subscription::Queue { queue }) => match nack {
                None => queue.ack(self.id, sid, delivery_id).map(|()| false),
                Some(requeue) => queue.nack(self.id, sid, delivery_id, requeue),
            },
            _ => Err(QueueError::UnknownDelivery(delivery_id)),
        };
        match result {
            Ok(true) => Stats::add(&self.broker.stats().dropped_rejected, 1),
            Ok(false) => {}
            Err(error) => {
                self.send_error(ErrorCode::UnknownDelivery, delivery_id, error.to_string())
            }
        }
    }

    fn on_credit(&mut self, sid: u32, prefetch: u32) {
        let result = self.require_role(self.role.can_subscribe(), "set credit").and_then(|()| {
            if prefetch > MAX_PREFETCH {
                return Err(Refusal::new(ErrorCode::InvalidArgument, format!("prefetch {prefetch} is above the maximum of {MAX_PREFETCH}")));
            }
            match self.subscriptions.get(&sid) {
                Some(Subscription::Queue { queue }) => queue
                    .set_prefetch(self.id, sid, prefetch)
                    .map_err(|error| Refusal::new(ErrorCode::UnknownSubscription, error.to_string())),
                Some(Subscription::Broadcast { .. }) => Err(Refusal::new(
                    ErrorCode::NotAQueueSubscription,
                    format!("subscription {sid} is a broadcast subscription; only queue subscriptions take credit"),
                )),
                None => Err(Refusal::new(ErrorCode::UnknownSubscription, format!("no active subscription with id {sid}"))),
            }
        });
        if let Err(refusal) = result {
            self.send_error(refusal.code, u64::from(sid), refusal.message);
        }
    }
}

/// A subject that failed validation, as the client is told.
pub(super) fn subject_refusal(error: SubjectError) -> Refusal {
    Refusal::new(error.error_code(), error.to_string())
}
