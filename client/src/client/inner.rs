//! The state every clone of a [`Client`](super::Client) shares: the outgoing
//! buffer, pending confirmations and requests, the subscription table; and what
//! happens to it when the connection comes up, goes down, or the client closes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use bytestring::ByteString;
use tern_proto::{Frame, Subscribe, SubscribeFiltered, Welcome};
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;
use tracing::warn;

use super::ServerInfo;
use crate::error::ClientError;
use crate::handoff::HandoffSender;
use crate::message::Message;
use crate::options::ClientOptions;
use crate::subscription::Delivery;

#[derive(Debug)]
pub(crate) struct Inner {
    pub(super) address: String,
    pub(super) options: ClientOptions,
    pub(super) subscriptions: Mutex<HashMap<u32, SubscriptionEntry>>,
    pub(super) state: Mutex<State>,
    pub(super) wake_writer: Notify,
    pub(super) room: Notify,
    pub(super) close_requested: Notify,
    pub(super) closed: AtomicBool,
    pub(super) epoch: AtomicU64,
    pub(super) next_sid: AtomicU32,
    pub(super) inbox_sid: AtomicU32,
    pub(super) inbox_prefix: String,
    pub(super) inbox_ready: tokio::sync::Mutex<bool>,
    pub(super) next_request: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(super) buffer: BytesMut,
    pub(super) connected: bool,
    pub(super) next_sequence: u64,
    pub(super) pending: HashMap<u64, Pending>,
    pub(super) requests: HashMap<u64, oneshot::Sender<Result<Message, ClientError>>>,
    pub(super) pings: VecDeque<oneshot::Sender<()>>,
    /// Queue administration requests waiting for their answers, by request id.
    pub(super) admin: HashMap<u64, super::queue_admin::AdminRequest>,
    pub(super) server: Option<ServerInfo>,
    /// The last publish subject that passed validation: publishing to the same
    /// subject again (the common case) skips validating it.
    pub(super) last_subject: String,
    /// The writer found the buffer empty and waits to be woken: the next publish
    /// wakes it (publishes while it is busy do not need to).
    pub(super) writer_idle: bool,
}

#[derive(Debug)]
pub(super) enum Pending {
    Publish(oneshot::Sender<Result<(), ClientError>>),
    Request { id: u64, subject: String },
}

#[derive(Debug)]
pub(super) struct SubscriptionEntry {
    pub(super) spec: Subscribe,
    /// The header filter, for SUBSCRIBE_FILTERED (and resubscriptions).
    pub(super) filter: Option<ByteString>,
    pub(super) sink: Sink,
    pub(super) confirm: Option<oneshot::Sender<Result<(), ClientError>>>,
    pub(super) missed: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
pub(super) enum Sink {
    /// Shared: the reader takes a clone for each read that stages messages for it,
    /// and cloning an `Arc` takes no lock (cloning the sender itself does).
    Broadcast(Arc<HandoffSender<Message>>),
    Queue(Arc<HandoffSender<Delivery>>),
    Inbox,
}

/// SUBSCRIBE, or SUBSCRIBE_FILTERED when there is a filter.
fn subscribe_frame(spec: &Subscribe, filter: Option<&ByteString>) -> Frame {
    match filter {
        Some(filter) => Frame::SubscribeFiltered(SubscribeFiltered {
            subscribe: spec.clone(),
            filter: filter.clone(),
        }),
        None => Frame::Subscribe(spec.clone()),
    }
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn lock_subscriptions(&self) -> MutexGuard<'_, HashMap<u32, SubscriptionEntry>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn next_sid(&self) -> u32 {
        self.next_sid.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(super) fn request_close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.close_requested.notify_one();
            self.wake_writer.notify_one();
            self.room.notify_waiters();
        }
    }

    /// Sends a request whose answer `register` arranges to wait for (under the
    /// state lock, so the answer cannot arrive first); fails at once when closed
    /// or disconnected.
    pub(super) fn write_request(
        &self,
        frame: &Frame,
        register: impl FnOnce(&mut State),
    ) -> Result<(), ClientError> {
        {
            let mut state = self.lock_state();
            if self.closed.load(Ordering::Acquire) {
                return Err(ClientError::Closed);
            }
            if !state.connected {
                return Err(ClientError::Disconnected);
            }
            register(&mut state);
            encode_into(&mut state.buffer, frame);
        }
        self.wake_writer.notify_one();
        Ok(())
    }

    /// Writes a control frame if connected. Returns whether it was written.
    pub(crate) fn write_control(&self, frame: &Frame) -> bool {
        let mut state = self.lock_state();
        if !state.connected {
            return false;
        }
        encode_into(&mut state.buffer, frame);
        // As for publishes: only a writer that found nothing to write waits to be
        // woken; a busy one takes this frame with its next batch. Acks come one per
        // delivery, so waking the writer for each cost a task wake-up per message.
        let wake = std::mem::take(&mut state.writer_idle);
        drop(state);
        if wake {
            self.wake_writer.notify_one();
        }
        true
    }

    pub(super) async fn add_subscription(
        &self,
        spec: Subscribe,
        filter: Option<ByteString>,
        sink: Sink,
    ) -> Result<(u32, Arc<AtomicU64>), ClientError> {
        let sid = spec.sid;
        let (confirm, confirmed) = oneshot::channel();
        let missed = Arc::new(AtomicU64::new(0));
        {
            let mut subscriptions = self.lock_subscriptions();
            if self.closed.load(Ordering::Acquire) {
                return Err(ClientError::Closed);
            }
            let frame = subscribe_frame(&spec, filter.as_ref());
            subscriptions.insert(
                sid,
                SubscriptionEntry {
                    spec,
                    filter,
                    sink,
                    confirm: Some(confirm),
                    missed: missed.clone(),
                },
            );
            // While disconnected the SUBSCRIBE goes out with the resubscriptions.
            self.write_control(&frame);
        }
        let outcome = match timeout(self.options.operation_timeout, confirmed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        };
        if let Err(error) = outcome {
            self.lock_subscriptions().remove(&sid);
            self.write_control(&Frame::Unsubscribe { sid });
            return Err(error);
        }
        Ok((sid, missed))
    }

    /// Forgets a subscription and tells the broker (if connected).
    pub(crate) fn remove_subscription(&self, sid: u32) {
        if self.lock_subscriptions().remove(&sid).is_some() {
            self.write_control(&Frame::Unsubscribe { sid });
        }
    }

    /// A new connection is up: resubscribe everything, then send what was buffered.
    pub(super) fn on_connected(&self, welcome: &Welcome) {
        let subscriptions = self.lock_subscriptions();
        let mut buffer = BytesMut::new();
        for entry in subscriptions.values() {
            encode_into(
                &mut buffer,
                &subscribe_frame(&entry.spec, entry.filter.as_ref()),
            );
        }
        let mut state = self.lock_state();
        let buffered = std::mem::take(&mut state.buffer);
        buffer.extend_from_slice(&buffered);
        state.buffer = buffer;
        state.connected = true;
        state.server = Some(welcome.clone());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        drop(state);
        drop(subscriptions);
        self.wake_writer.notify_one();
    }

    /// The connection is gone: fail what was waiting on it, drop unsent frames.
    pub(super) fn on_disconnected(&self) {
        let mut state = self.lock_state();
        state.connected = false;
        state.buffer.clear();
        let pending: Vec<Pending> = state.pending.drain().map(|(_, pending)| pending).collect();
        let requests: Vec<_> = state.requests.drain().map(|(_, sender)| sender).collect();
        state.pings.clear();
        state.admin.clear();
        drop(state);
        for pending in pending {
            if let Pending::Publish(sender) = pending {
                let _ = sender.send(Err(ClientError::Disconnected));
            }
        }
        for sender in requests {
            let _ = sender.send(Err(ClientError::Disconnected));
        }
        self.room.notify_waiters();
    }

    /// The client is finished: end every subscription stream.
    pub(super) fn on_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.on_disconnected();
        let entries: Vec<SubscriptionEntry> = self
            .lock_subscriptions()
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for mut entry in entries {
            if let Some(confirm) = entry.confirm.take() {
                let _ = confirm.send(Err(ClientError::Closed));
            }
        }
    }
}

pub(super) fn encode_into(buffer: &mut BytesMut, frame: &Frame) {
    if let Err(error) = frame.encode(buffer) {
        warn!(%error, "could not encode a frame");
    }
}

pub(super) fn random_token(length: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(length)
        .collect()
}
