//! The [`Client`]: one connection to a broker, shared by every clone of it.
//!
//! Outgoing frames are encoded straight into one buffer; a writer task sends
//! whatever has accumulated with a single write, so a burst of publishes costs a few
//! syscalls, not one each. A reader task decodes incoming frames and routes them to
//! subscriptions, confirmations and requests. A driver task owns the connection's
//! life: when it drops, pending operations fail with [`ClientError::Disconnected`],
//! the client reconnects with backoff and jitter, and every subscription is sent
//! again.
//!
//! Lock order: `subscriptions` → `state`. No lock is held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use tern_proto::subject::{validate_pattern, validate_subject};
use tern_proto::{
    codec, DeliveryMode, ErrorCode, ErrorFrame, Frame, Hello, ReadBuffer, Subscribe, Welcome,
    LENGTH_PREFIX_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::error::ClientError;
use crate::handoff::{handoff, HandoffSender};
use crate::message::{Message, OutgoingMessage};
use crate::options::ClientOptions;
use crate::subscription::{Delivery, QueueSubscription, Subscription};

/// Frames from the broker may be a little larger than what it accepts from clients
/// (DELIVER carries more fields than PUBLISH).
const SERVER_FRAME_SLACK: u32 = 64 * 1024;

/// What the broker said about itself in WELCOME.
pub type ServerInfo = Welcome;

/// A connection to a Tern broker. Cheap to clone; all clones share the connection,
/// which closes when the last clone and subscription are dropped or on [`Client::close`].
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _handle: Arc<HandleGuard>,
}

/// Closes the connection when the last user-facing handle goes away.
#[derive(Debug)]
struct HandleGuard {
    inner: Arc<Inner>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.inner.request_close();
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    address: String,
    options: ClientOptions,
    subscriptions: Mutex<HashMap<u32, SubscriptionEntry>>,
    state: Mutex<State>,
    wake_writer: Notify,
    room: Notify,
    close_requested: Notify,
    closed: AtomicBool,
    epoch: AtomicU64,
    next_sid: AtomicU32,
    inbox_sid: AtomicU32,
    inbox_prefix: String,
    inbox_ready: tokio::sync::Mutex<bool>,
    next_request: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct State {
    buffer: BytesMut,
    connected: bool,
    next_sequence: u64,
    pending: HashMap<u64, Pending>,
    requests: HashMap<u64, oneshot::Sender<Result<Message, ClientError>>>,
    pings: VecDeque<oneshot::Sender<()>>,
    server: Option<ServerInfo>,
    /// The last publish subject that passed validation: publishing to the same
    /// subject again (the common case) skips validating it.
    last_subject: String,
    /// The writer found the buffer empty and waits to be woken: the next publish
    /// wakes it (publishes while it is busy do not need to).
    writer_idle: bool,
}

#[derive(Debug)]
enum Pending {
    Publish(oneshot::Sender<Result<(), ClientError>>),
    Request { id: u64, subject: String },
}

#[derive(Debug)]
struct SubscriptionEntry {
    spec: Subscribe,
    sink: Sink,
    confirm: Option<oneshot::Sender<Result<(), ClientError>>>,
    missed: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
enum Sink {
    Broadcast(HandoffSender<Message>),
    Queue(HandoffSender<Delivery>),
    Inbox,
}

/// The subscriptions one socket read delivers to, with the messages staged for each:
/// the subscription table's lock is taken once per read and subscription instead of
/// once per message, and each subscription gets its messages in one hand-off.
#[derive(Debug, Default)]
struct SinkCache {
    entries: Vec<StagedSink>,
    /// Staging vectors emptied by earlier reads, kept with their capacity: a read's
    /// messages are staged without regrowing a vector from nothing each time.
    spare_messages: Vec<Vec<Message>>,
    spare_deliveries: Vec<Vec<Delivery>>,
}

#[derive(Debug)]
struct StagedSink {
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
        self.entries.len() - 1
    }
}

/// The fields of a PUBLISH, borrowed: encoded straight into the write buffer.
#[derive(Debug, Clone, Copy)]
struct PublishParts<'a> {
    subject: &'a str,
    reply_to: Option<&'a str>,
    headers: &'a [tern_proto::Header],
    payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    fn new(subject: &'a str, payload: &'a [u8]) -> Self {
        PublishParts {
            subject,
            reply_to: None,
            headers: &[],
            payload,
        }
    }

    fn of(message: &'a OutgoingMessage) -> Self {
        PublishParts {
            subject: &message.subject,
            reply_to: message.reply_to.as_deref(),
            headers: &message.headers,
            payload: &message.payload,
        }
    }
}

/// A writer idle for [`IDLE_RELEASE_AFTER`] keeps at most this much spare buffer
/// capacity.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// How long the writer, or the reader, must be idle before releasing its buffers.
pub(crate) const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// A connected, handshaken socket.
struct Established {
    stream: TcpStream,
    welcome: Welcome,
    leftover: BytesMut,
}

impl Client {
    /// Connects with default options.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), tern_client::ClientError> {
    /// let client = tern_client::Client::connect("127.0.0.1:9080").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(address: impl Into<String>) -> Result<Client, ClientError> {
        Client::connect_with(address, ClientOptions::default()).await
    }

    /// Connects with the given options. The first connection attempt is not retried:
    /// its failure is returned. Later disconnections reconnect per the policy.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), tern_client::ClientError> {
    /// use std::time::Duration;
    /// use tern_client::{Client, ClientOptions, ReconnectPolicy};
    /// let options = ClientOptions::default()
    ///     .name("billing-worker")
    ///     .operation_timeout(Duration::from_secs(2))
    ///     .reconnect(ReconnectPolicy { max_attempts: Some(10), ..ReconnectPolicy::default() });
    /// let client = Client::connect_with("127.0.0.1:9080", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        address: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let address = address.into();
        let established = open(&address, &options).await?;
        let inbox_prefix = format!("_INBOX.{}", random_token(16));
        let inner = Arc::new(Inner {
            address,
            options,
            subscriptions: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                buffer: BytesMut::new(),
                connected: false,
                next_sequence: 1,
                pending: HashMap::new(),
                requests: HashMap::new(),
                pings: VecDeque::new(),
                server: None,
                last_subject: String::new(),
                writer_idle: false,
            }),
            wake_writer: Notify::new(),
            room: Notify::new(),
            close_requested: Notify::new(),
            closed: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            next_sid: AtomicU32::new(1),
            inbox_sid: AtomicU32::new(0),
            inbox_prefix,
            inbox_ready: tokio::sync::Mutex::new(false),
            next_request: AtomicU64::new(1),
        });
        inner.on_connected(&established.welcome);
        tokio::spawn(drive(inner.clone(), established));
        Ok(Client {
            _handle: Arc::new(HandleGuard {
                inner: inner.clone(),
            }),
            inner,
        })
    }

    /// What the broker announced in WELCOME on the current connection.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) {
    /// if let Some(server) = client.server_info() {
    ///     println!("{} accepts frames up to {} bytes", server.server_name, server.max_frame_bytes);
    /// }
    /// # }
    /// ```
    pub fn server_info(&self) -> Option<ServerInfo> {
        self.inner.lock_state().server.clone()
    }

    /// Publishes a message without waiting for the broker. Frames are coalesced:
    /// this returns once the frame is buffered. Waits only when
    /// `max_pending_bytes` are already buffered (backpressure).
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// client.publish("orders.eu.created", "order 42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        // Borrowed all the way into the write buffer: no allocation per message.
        self.inner
            .write_publish(PublishParts::new(subject, payload.as_ref()), None)
            .await
    }

    /// Publishes a message with headers and/or reply-to without waiting for the broker.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// use tern_client::OutgoingMessage;
    /// client.send(OutgoingMessage::new("orders.eu.created", "order 42").header("trace-id", "abc")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, message: OutgoingMessage) -> Result<(), ClientError> {
        self.inner
            .write_publish(PublishParts::of(&message), None)
            .await
    }

    /// Publishes and waits until the broker accepted the message (stored in every
    /// matching queue and handed to every matching subscriber's buffer) or refused it.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// match client.publish_confirmed("jobs.resize", "image-7").await {
    ///     Ok(()) => println!("accepted"),
    ///     Err(error) => eprintln!("refused: {error}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn publish_confirmed(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        self.confirm(PublishParts::new(subject, payload.as_ref()))
            .await
    }

    /// [`Client::send`], waiting for the broker's verdict like [`Client::publish_confirmed`].
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// use tern_client::OutgoingMessage;
    /// client.send_confirmed(OutgoingMessage::new("jobs.resize", "image-7").header("priority", "high")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_confirmed(&self, message: OutgoingMessage) -> Result<(), ClientError> {
        self.confirm(PublishParts::of(&message)).await
    }

    async fn confirm(&self, parts: PublishParts<'_>) -> Result<(), ClientError> {
        let (sender, receiver) = oneshot::channel();
        self.inner
            .write_publish(parts, Some(Pending::Publish(sender)))
            .await?;
        match timeout(self.inner.options.operation_timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Subscribes to a pattern in broadcast mode: every matching message, in publish
    /// order per publisher. Returns once the broker confirmed the subscription.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut orders = client.subscribe("orders.*.created").await?;
    /// while let Some(message) = orders.next().await {
    ///     println!("{}: {:?}", message.subject(), message.payload());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, ClientError> {
        validate_pattern(pattern)?;
        let (sender, receiver) = handoff(
            self.inner.options.subscription_capacity,
            self.inner.options.subscription_bytes,
        );
        let spec = Subscribe {
            sid: self.inner.next_sid(),
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 0,
            pattern: pattern.into(),
            queue: None,
        };
        let (sid, missed) = self
            .inner
            .add_subscription(spec, Sink::Broadcast(sender))
            .await?;
        Ok(Subscription::new(self.clone(), sid, receiver, missed))
    }

    /// Joins the queue `queue` as a competing consumer holding at most `prefetch`
    /// unacked deliveries (0 = the broker's default). A queue that does not exist
    /// yet is created, bound to the subject equal to its name. Each delivery must be
    /// acked or nacked.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut jobs = client.queue_subscribe("jobs.resize", 16).await?;
    /// while let Some(delivery) = jobs.next().await {
    ///     println!("working on {:?}", delivery.payload());
    ///     delivery.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_subscribe(
        &self,
        queue: &str,
        prefetch: u32,
    ) -> Result<QueueSubscription, ClientError> {
        self.queue_subscribe_bound(queue, "", prefetch).await
    }

    /// Like [`Client::queue_subscribe`], creating the queue bound to `pattern`
    /// (wildcards allowed) if it does not exist yet.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut audit = client.queue_subscribe_bound("audit", "orders.>", 64).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_subscribe_bound(
        &self,
        queue: &str,
        pattern: &str,
        prefetch: u32,
    ) -> Result<QueueSubscription, ClientError> {
        validate_subject(queue)?;
        if !pattern.is_empty() {
            validate_pattern(pattern)?;
        }
        let capacity = if prefetch == 0 {
            65_536
        } else {
            prefetch as usize
        };
        // Bounded by the prefetch window the consumer chose, not by bytes.
        let (sender, receiver) = handoff(capacity, usize::MAX);
        let spec = Subscribe {
            sid: self.inner.next_sid(),
            mode: Some(DeliveryMode::Queue),
            prefetch,
            pattern: pattern.into(),
            queue: Some(queue.into()),
        };
        let (sid, _missed) = self
            .inner
            .add_subscription(spec, Sink::Queue(sender))
            .await?;
        Ok(QueueSubscription::new(self.clone(), sid, receiver))
    }

    /// Sends a request and waits for the first reply. Replies come back through a
    /// per-connection inbox subscription (`_INBOX.<random>.*`, created on first
    /// use). If nothing can receive the request, fails at once with
    /// [`ClientError::NoResponders`]; if no reply comes in time, with
    /// [`ClientError::Timeout`].
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// use std::time::Duration;
    /// let reply = client.request("svc.echo", "hello", Duration::from_secs(1)).await?;
    /// println!("{:?}", reply.payload());
    /// # Ok(()) }
    /// ```
    pub async fn request(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        self.request_parts(PublishParts::new(subject, payload.as_ref()), wait)
            .await
    }

    /// [`Client::request`] with headers. The reply-to is set by the client.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// use std::time::Duration;
    /// use tern_client::OutgoingMessage;
    /// let request = OutgoingMessage::new("svc.price", "sku-1").header("currency", "EUR");
    /// let reply = client.request_message(request, Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_message(
        &self,
        message: OutgoingMessage,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        self.request_parts(PublishParts::of(&message), wait).await
    }

    async fn request_parts(
        &self,
        parts: PublishParts<'_>,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        validate_subject(parts.subject)?;
        self.ensure_inbox().await?;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let reply_to = format!("{}.{id}", self.inner.inbox_prefix);
        let parts = PublishParts {
            reply_to: Some(&reply_to),
            ..parts
        };
        let (sender, receiver) = oneshot::channel();
        self.inner.lock_state().requests.insert(id, sender);
        let pending = Pending::Request {
            id,
            subject: parts.subject.to_owned(),
        };
        if let Err(error) = self.inner.write_publish(parts, Some(pending)).await {
            self.inner.lock_state().requests.remove(&id);
            return Err(error);
        }
        match timeout(wait, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                self.inner.lock_state().requests.remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Publishes `payload` to the reply-to of `request`.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut requests = client.subscribe("svc.echo").await?;
    /// while let Some(request) = requests.next().await {
    ///     client.respond(&request, request.payload()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn respond(
        &self,
        request: &Message,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        let reply_to = request.reply_to().ok_or(ClientError::NoReplyTo)?;
        self.publish(reply_to, payload).await
    }

    /// Waits until the broker has processed every frame sent so far (a PING/PONG
    /// round trip: the broker handles a connection's frames in order).
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// for n in 0..1000 {
    ///     client.publish("metrics.cpu", n.to_string()).await?;
    /// }
    /// client.flush().await?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.inner.lock_state();
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(ClientError::Closed);
            }
            if !state.connected {
                return Err(ClientError::Disconnected);
            }
            state.pings.push_back(sender);
            encode_into(&mut state.buffer, &Frame::Ping);
        }
        self.inner.wake_writer.notify_one();
        match timeout(self.inner.options.operation_timeout, receiver).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Flushes what is buffered (best effort), then closes the connection. Active
    /// subscriptions end; other clones of this client stop working.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// client.publish("events.last", "bye").await?;
    /// client.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) {
        let _ = self.flush().await;
        self.inner.request_close();
    }

    /// Whether the client currently has a handshaken connection to the broker.
    /// While it is `false` (and the client is not closed), the client is
    /// reconnecting: publishes are buffered, acks and flushes fail.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) {
    /// if !client.is_connected() {
    ///     eprintln!("broker unreachable; publishes are being buffered");
    /// }
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.inner.lock_state().connected
    }

    /// Whether the client has been closed or has given up reconnecting.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) {
    /// client.close().await;
    /// assert!(client.is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    async fn ensure_inbox(&self) -> Result<(), ClientError> {
        let mut ready = self.inner.inbox_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let spec = Subscribe {
            sid: self.inner.next_sid(),
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 0,
            pattern: format!("{}.*", self.inner.inbox_prefix).into(),
            queue: None,
        };
        self.inner.inbox_sid.store(spec.sid, Ordering::Release);
        self.inner.add_subscription(spec, Sink::Inbox).await?;
        *ready = true;
        Ok(())
    }
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_subscriptions(&self) -> MutexGuard<'_, HashMap<u32, SubscriptionEntry>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn next_sid(&self) -> u32 {
        self.next_sid.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn request_close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.close_requested.notify_one();
            self.wake_writer.notify_one();
            self.room.notify_waiters();
        }
    }

    /// Encodes a PUBLISH into the outgoing buffer, waiting for room if it is full.
    async fn write_publish(
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
    fn try_encode_publish(
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

    /// Writes a control frame if connected. Returns whether it was written.
    pub(crate) fn write_control(&self, frame: &Frame) -> bool {
        let mut state = self.lock_state();
        if !state.connected {
            return false;
        }
        encode_into(&mut state.buffer, frame);
        drop(state);
        self.wake_writer.notify_one();
        true
    }

    async fn add_subscription(
        &self,
        spec: Subscribe,
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
            let frame = Frame::Subscribe(spec.clone());
            subscriptions.insert(
                sid,
                SubscriptionEntry {
                    spec,
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
    fn on_connected(&self, welcome: &Welcome) {
        let subscriptions = self.lock_subscriptions();
        let mut buffer = BytesMut::new();
        for entry in subscriptions.values() {
            encode_into(&mut buffer, &Frame::Subscribe(entry.spec.clone()));
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
    fn on_disconnected(&self) {
        let mut state = self.lock_state();
        state.connected = false;
        state.buffer.clear();
        let pending: Vec<Pending> = state.pending.drain().map(|(_, pending)| pending).collect();
        let requests: Vec<_> = state.requests.drain().map(|(_, sender)| sender).collect();
        state.pings.clear();
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
    fn on_closed(&self) {
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

    fn handle_frame(self: &Arc<Self>, frame: Frame, sinks: &mut SinkCache) {
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
            Frame::Goodbye(goodbye) => {
                info!(code = goodbye.code, message = %goodbye.message, "broker is closing the connection")
            }
            other => debug!(opcode = ?other.opcode(), "ignoring unexpected frame"),
        }
    }

    fn on_error(&self, error: ErrorFrame) {
        let code = ErrorCode::try_from(error.code).ok();
        let about_subscription = matches!(
            code,
            Some(
                ErrorCode::InvalidSubject
                    | ErrorCode::InvalidQueueName
                    | ErrorCode::InvalidArgument
                    | ErrorCode::DuplicateSubscription
                    | ErrorCode::TooManySubscriptions
                    | ErrorCode::QueuePatternMismatch
                    | ErrorCode::TooManyQueues
                    | ErrorCode::PermissionDenied
                    | ErrorCode::ShuttingDown
            )
        );
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
                        // A resubscription was refused: the stream ends.
                        None => {
                            warn!(subscription = sid, %failure, "subscription ended by the broker")
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
    fn on_deliver(self: &Arc<Self>, deliver: tern_proto::Deliver, sinks: &mut SinkCache) {
        let message = deliver.message;
        let index = match sinks
            .entries
            .iter()
            .position(|entry| entry.sid == deliver.sid)
        {
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
            Sink::Inbox => {
                let id = message
                    .subject()
                    .rsplit('.')
                    .next()
                    .and_then(|token| token.parse::<u64>().ok());
                if let Some(sender) = id.and_then(|id| self.lock_state().requests.remove(&id)) {
                    let _ = sender.send(Ok(message));
                }
            }
        }
    }
}

fn encode_into(buffer: &mut BytesMut, frame: &Frame) {
    if let Err(error) = frame.encode(buffer) {
        warn!(%error, "could not encode a frame");
    }
}

fn random_token(length: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(length)
        .collect()
}

/// Connects and performs the handshake.
async fn open(address: &str, options: &ClientOptions) -> Result<Established, ClientError> {
    let connect = timeout(options.connect_timeout, TcpStream::connect(address)).await;
    let mut stream = match connect {
        Err(_) => return Err(ClientError::Timeout),
        Ok(Err(source)) => {
            return Err(ClientError::Connect {
                address: address.to_owned(),
                source,
            })
        }
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true)?;
    let hello = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: options.role,
        client_name: ByteString::from(options.name.as_str()),
        auth_token: ByteString::from(options.auth_token.as_str()),
    });
    stream.write_all(&hello.to_bytes()?).await?;
    let mut buffer = BytesMut::with_capacity(1024);
    let welcome = timeout(
        options.connect_timeout,
        read_welcome(&mut stream, &mut buffer),
    )
    .await
    .map_err(|_| ClientError::Timeout)??;
    Ok(Established {
        stream,
        welcome,
        leftover: buffer,
    })
}

async fn read_welcome(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
) -> Result<Welcome, ClientError> {
    loop {
        if let Some(frame) = codec::decode(buffer, tern_proto::DEFAULT_MAX_FRAME_BYTES)? {
            return match frame {
                Frame::Welcome(welcome) => Ok(welcome),
                Frame::Error(error) => Err(ClientError::Handshake {
                    code: error.code,
                    message: error.message.to_string(),
                }),
                other => Err(ClientError::Handshake {
                    code: ErrorCode::UnexpectedFrame.as_u16(),
                    message: format!("expected WELCOME, got {:?}", other.opcode()),
                }),
            };
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(ClientError::Disconnected);
        }
    }
}

/// Owns the connection's life: run it, and on loss reconnect per the policy.
async fn drive(inner: Arc<Inner>, first: Established) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    loop {
        let established = match next.take() {
            Some(established) => established,
            None => {
                let policy = &inner.options.reconnect;
                if inner.closed.load(Ordering::Acquire)
                    || !policy.enabled
                    || policy.max_attempts.is_some_and(|max| attempt >= max)
                {
                    break;
                }
                let delay = policy.delay(attempt);
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = inner.close_requested.notified() => break,
                }
                match open(&inner.address, &inner.options).await {
                    Ok(established) => {
                        info!(address = %inner.address, "reconnected");
                        inner.on_connected(&established.welcome);
                        attempt = 0;
                        established
                    }
                    Err(error) => {
                        debug!(address = %inner.address, %error, attempt, "reconnect failed");
                        continue;
                    }
                }
            }
        };
        let max_frame = established
            .welcome
            .max_frame_bytes
            .saturating_add(SERVER_FRAME_SLACK);
        let (read_half, mut write_half) = established.stream.into_split();
        let closing = tokio::select! {
            result = read_loop(&inner, read_half, established.leftover, max_frame) => {
                debug!(?result, "connection lost (read side)");
                false
            }
            result = write_loop(&inner, &mut write_half) => match result {
                // The writer only returns Ok once a close was requested and everything
                // buffered before it has been written.
                Ok(()) => true,
                Err(error) => {
                    debug!(%error, "connection lost (write side)");
                    false
                }
            },
        };
        if closing {
            let _ = write_half.shutdown().await;
        }
        inner.on_disconnected();
        if closing || inner.closed.load(Ordering::Acquire) {
            break;
        }
        warn!(address = %inner.address, "disconnected from the broker; reconnecting");
    }
    inner.on_closed();
}

/// Largest read of small frames. Smaller than the broker's: delivered messages pin
/// their allocation until the application has taken them. In `tern bench` 1→4 at
/// 128 B, the broker's 256 KiB reads and 4 MiB of spares took the bench process
/// from 36–37 MB RSS to 44–46 MB; with these two limits it was 39–40 MB.
const CLIENT_MAX_READ_BYTES: usize = 64 * 1024;

/// Spare read allocations kept for reuse (see [`CLIENT_MAX_READ_BYTES`]).
const CLIENT_SPARE_BYTES: usize = 1024 * 1024;

async fn read_loop(
    inner: &Arc<Inner>,
    mut socket: OwnedReadHalf,
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

/// Writes whatever is buffered, one `write_all` per batch: swaps the shared buffer
/// for its own empty spare, so neither side reallocates. Returns `Ok` only when a
/// close was requested and the buffer is empty, so buffered acks and publishes are
/// not lost by closing.
async fn write_loop(inner: &Inner, socket: &mut OwnedWriteHalf) -> Result<(), ClientError> {
    let mut batch = BytesMut::new();
    loop {
        let idle = {
            let mut state = inner.lock_state();
            if state.buffer.is_empty() {
                state.writer_idle = true;
                true
            } else {
                std::mem::swap(&mut state.buffer, &mut batch);
                false
            }
        };
        if !idle {
            inner.room.notify_waiters();
            socket.write_all(&batch).await?;
            batch.clear();
        } else if inner.closed.load(Ordering::Acquire) {
            return Ok(());
        } else if batch.capacity() > IDLE_BUFFER_BYTES {
            // Released only after a while idle: a writer that catches up with its
            // publishers is idle many times a second.
            if timeout(IDLE_RELEASE_AFTER, inner.wake_writer.notified())
                .await
                .is_err()
            {
                batch = BytesMut::new();
            }
        } else {
            inner.wake_writer.notified().await;
        }
    }
}
