//! The reader: decodes every frame of a read and routes it — deliveries to their
//! subscriptions (one hand-off per subscription per read), confirmations and
//! errors to whoever waits for them, PINGs answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tern_proto::read_buffer::ReadSource;
use tern_proto::{ErrorCode, ErrorFrame, Frame, ReadBuffer};
use tracing::{debug, info, warn};

use super::inner::{Inner, Pending, Sink};
use super::writer::IDLE_RELEASE_AFTER;
use crate::error::ClientError;
use crate::message::Message;
use crate::subscription::Delivery;

/// The subscriptions one socket read delivers to, with the messages staged for each:
/// the subscription table's lock is taken once per read and subscription instead of
/// once per message, and each subscription gets its messages in one hand-off.
#[derive(Debug, Default)]
pub(super) struct SinkCache {
    entries: Vec<StagedSink>,
    /// `sid` → index in `entries`, once a read stages for more than
    /// [`LINEAR_LOOKUP_LIMIT`] subscriptions (a connection holding thousands of
    /// filtered subscriptions must not scan them per delivery).
    positions: std::collections::HashMap<u32, usize>,
    /// Staging vectors emptied by earlier reads, kept with their capacity: a read's
    /// messages are staged without regrowing a vector from nothing each time.
    spare_messages: Vec<Vec<Message>>,
    spare_deliveries: Vec<Vec<Delivery>>,
}

#[derive(Debug)]
pub(super) struct StagedSink {
    sid: u32,
    sink: Sink,
    messages: Vec<Message>,
    deliveries: Vec<Delivery>,
}

impl SinkCache {
    /// Hands every subscription what this read staged for it (waiting while a
    /// subscription's buffer is full), then forgets the sinks: a subscription
    /// removed meanwhile is seen by the next read.
    async fn flush(&mut self) {
        self.positions.clear();
        for mut entry in self.entries.drain(..) {
            match &entry.sink {
                Sink::Broadcast(sender) => {
                    sender.send_all(&mut entry.messages).await;
                    self.spare_messages.push(entry.messages);
                }
                Sink::Queue(sender) => {
                    sender.send_all(&mut entry.deliveries).await;
                    self.spare_deliveries.push(entry.deliveries);
                }
                Sink::Inbox => {}
            }
        }
    }

    /// Starts staging for subscription `sid`; returns its index.
    fn add(&mut self, sid: u32, sink: Sink) -> usize {
        let (messages, deliveries) = match sink {
            Sink::Broadcast(_) => (self.spare_messages.pop().unwrap_or_default(), Vec::new()),
            Sink::Queue(_) => (Vec::new(), self.spare_deliveries.pop().unwrap_or_default()),
            Sink::Inbox => (Vec::new(), Vec::new()),
        };
        self.entries.push(StagedSink {
            sid,
            sink,
            messages,
            deliveries,
        });
        let index = self.entries.len() - 1;
        if self.entries.len() > LINEAR_LOOKUP_LIMIT {
            if self.positions.is_empty() {
                for (position, entry) in self.entries.iter().enumerate() {
                    self.positions.insert(entry.sid, position);
                }
            } else {
                self.positions.insert(sid, index);
            }
        }
        index
    }

    /// The index of subscription `sid`'s staging entry, if this read has one.
    fn find(&self, sid: u32) -> Option<usize> {
        if self.entries.len() > LINEAR_LOOKUP_LIMIT {
            return self.positions.get(&sid).copied();
        }
        self.entries.iter().position(|entry| entry.sid == sid)
    }
}

/// Subscriptions one read stages for before lookups go through a map.
const LINEAR_LOOKUP_LIMIT: usize = 8;

/// Largest read of small frames. Smaller than the broker's: delivered messages pin
/// their allocation until the application has taken them, so larger reads and more
/// spares cost a subscriber memory (measured: `benches/results/read-buffer-sizing.md`).
const CLIENT_MAX_READ_BYTES: usize = 64 * 1024;

/// Spare read allocations kept for reuse (see [`CLIENT_MAX_READ_BYTES`]).
const CLIENT_SPARE_BYTES: usize = 1024 * 1024;

pub(super) async fn read_loop(
    inner: &Arc<Inner>,
    mut socket: impl ReadSource,
    leftover: BytesMut,
    max_frame: u32,
) -> Result<(), ClientError> {
    let mut sinks = SinkCache::default();
    let mut buffer = ReadBuffer::with_leftover(leftover, max_frame)
        .with_max_read(CLIENT_MAX_READ_BYTES)
        .with_spare_bytes(CLIENT_SPARE_BYTES);
    loop {
        loop {
            match buffer.decode() {
                Ok(Some(frame)) => inner.handle_frame(frame, &mut sinks),
                Ok(None) => break,
                Err(error) if error.is_recoverable() => {
                    debug!(%error, "skipping a frame this client does not know")
                }
                Err(error) => return Err(error.into()),
            }
        }
        sinks.flush().await;
        if buffer.read_from(&mut socket, IDLE_RELEASE_AFTER).await? == 0 {
            return Err(ClientError::Disconnected);
        }
    }
}

impl Inner {
    pub(super) fn handle_frame(self: &Arc<Self>, frame: Frame, sinks: &mut SinkCache) {
        match frame {
            Frame::Deliver(deliver) => self.on_deliver(deliver, sinks),
            Frame::PublishOk { sequence } => {
                if let Some(Pending::Publish(sender)) = self.lock_state().pending.remove(&sequence)
                {
                    let _ = sender.send(Ok(()));
                }
            }
            Frame::PublishError(error) => {
                let mut state = self.lock_state();
                match state.pending.remove(&error.sequence) {
                    Some(Pending::Publish(sender)) => {
                        let _ = sender.send(Err(ClientError::Refused {
                            code: error.code,
                            message: error.message.to_string(),
                        }));
                    }
                    Some(Pending::Request { id, subject }) => {
                        if let Some(sender) = state.requests.remove(&id) {
                            let failure = if error.code == ErrorCode::NoResponders.as_u16() {
                                ClientError::NoResponders { subject }
                            } else {
                                ClientError::Refused {
                                    code: error.code,
                                    message: error.message.to_string(),
                                }
                            };
                            let _ = sender.send(Err(failure));
                        }
                    }
                    None => {}
                }
            }
            Frame::SubscribeOk { sid } => {
                if let Some(confirm) = self
                    .lock_subscriptions()
                    .get_mut(&sid)
                    .and_then(|entry| entry.confirm.take())
                {
                    let _ = confirm.send(Ok(()));
                }
            }
            Frame::Error(error) => self.on_error(error),
            Frame::Lagged { sid, missed } => {
                if let Some(entry) = self.lock_subscriptions().get(&sid) {
                    entry.missed.fetch_add(missed, Ordering::Relaxed);
                }
                warn!(
                    subscription = sid,
                    missed, "broker dropped messages for a slow subscription"
                );
            }
            Frame::Ping => {
                self.write_control(&Frame::Pong);
            }
            Frame::Pong => {
                if let Some(sender) = self.lock_state().pings.pop_front() {
                    let _ = sender.send(());
                }
            }
            Frame::QueueInfo(info) => self.on_queue_info(info),
            Frame::QueueOk { request_id, count } => self.on_queue_ok(request_id, count),
            Frame::Goodbye(goodbye) => {
                info!(code = goodbye.code, message = %goodbye.message, "broker is closing the connection")
            }
            other => debug!(opcode = ?other.opcode(), "ignoring unexpected frame"),
        }
    }

    pub(super) fn on_error(&self, error: ErrorFrame) {
        if self.on_admin_error(&error) {
            return;
        }
        let code = ErrorCode::try_from(error.code).ok();
        let about_subscription = code.is_some_and(ErrorCode::can_refuse_subscribe);
        if about_subscription {
            if let Ok(sid) = u32::try_from(error.context) {
                let mut subscriptions = self.lock_subscriptions();
                if let Some(mut entry) = subscriptions.remove(&sid) {
                    let failure = ClientError::Refused {
                        code: error.code,
                        message: error.message.to_string(),
                    };
                    match entry.confirm.take() {
                        Some(confirm) => {
                            let _ = confirm.send(Err(failure));
                        }
                        // A resubscription was refused, or the queue was deleted:
                        // the stream ends.
                        None => {
                            warn!(subscription = sid, %failure, "subscription ended by the broker");
                            if super::queue_admin::ends_subscription(code) {
                                // The broker still holds the slot until we let go.
                                drop(subscriptions);
                                self.write_control(&Frame::Unsubscribe { sid });
                            }
                        }
                    }
                    return;
                }
            }
        }
        warn!(code = error.code, context = error.context, message = %error.message, "broker reported an error");
    }

    /// Stages a delivery for its subscription (handed over at the end of the read)
    /// or completes the request it answers.
    pub(super) fn on_deliver(
        self: &Arc<Self>,
        deliver: tern_proto::Deliver,
        sinks: &mut SinkCache,
    ) {
        let message = deliver.message;
        let index = match sinks.find(deliver.sid) {
            Some(index) => index,
            None => {
                let sink = self
                    .lock_subscriptions()
                    .get(&deliver.sid)
                    .map(|entry| entry.sink.clone());
                let Some(sink) = sink else { return };
                sinks.add(deliver.sid, sink)
            }
        };
        let entry = &mut sinks.entries[index];
        match &entry.sink {
            Sink::Broadcast(_) => entry.messages.push(message),
            Sink::Queue(_) => entry.deliveries.push(Delivery::new(
                message,
                deliver.delivery_id,
                deliver.redelivered,
                self.epoch(),
                self.clone(),
            )),
            Sink::Inbox => self.complete_request(message),
        }
    }
}
