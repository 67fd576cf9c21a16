//! The [`Client`]: one connection to a broker, shared by every clone of it.
//!
//! - this module — the API: connect, publish, subscribe, request, flush, close;
//! - [`inner`](self) (`inner.rs`) — the state every clone shares, subscriptions and
//!   what happens on connect, disconnect and close;
//! - `publish.rs` — encoding publishes straight into the outgoing buffer;
//! - `connection.rs` — dialling and the HELLO/WELCOME handshake;
//! - `reader.rs` — decoding frames and routing them to subscriptions, confirms,
//!   requests;
//! - `writer.rs` — one write per batch of buffered frames;
//! - `reconnect.rs` — the connection's life: run, lose, back off, reconnect,
//!   resubscribe;
//! - `requests.rs` — request/reply through one inbox subscription per client.
//!
//! Lock order: `subscriptions` → `state`. No lock is held across an `.await`.

mod connection;
mod inner;
mod publish;
mod queue_admin;
mod reader;
mod reconnect;
mod requests;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use std::collections::VecDeque;
use tern_proto::subject::{validate_pattern, validate_subject};
use tern_proto::{DeliveryMode, Frame, Subscribe, Welcome};
use tokio::sync::{oneshot, Notify};
use tokio::time::timeout;

use crate::error::ClientError;
use crate::handoff::handoff;
use crate::message::{Message, OutgoingMessage};
use crate::options::ClientOptions;
use crate::subscription::{QueueSubscription, Subscription};
use connection::open;
pub(crate) use inner::Inner;
use inner::{random_token, Pending, Sink, State};
use publish::PublishParts;
pub use queue_admin::QueueStatus;
use reconnect::drive;

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
                admin: HashMap::new(),
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
        self.subscribe_with(pattern, None).await
    }

    /// Like [`Client::subscribe`], but the subscription gets only the messages whose
    /// headers match `filter` (PROTOCOL.md § 7, "Header filters"), such as
    /// `profile_id = 'u1' AND device_id = 'd1'`. The filter is checked here first,
    /// so a bad one fails at once with [`ClientError::InvalidFilter`] and the byte
    /// position; a broker that speaks only protocol version 1 gives
    /// [`ClientError::Unsupported`].
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut mine = client
    ///     .subscribe_filtered("user.event.delivery", "profile_id = 'u1' AND device_id = 'd1'")
    ///     .await?;
    /// while let Some(message) = mine.next().await {
    ///     println!("{:?}", message.payload());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_filtered(
        &self,
        pattern: &str,
        filter: &str,
    ) -> Result<Subscription, ClientError> {
        self.check_filter(filter)?;
        self.subscribe_with(pattern, Some(filter.into())).await
    }

    /// A filter must parse, and the broker must speak protocol version 2.
    fn check_filter(&self, filter: &str) -> Result<(), ClientError> {
        tern_proto::Filter::parse(filter)?;
        match self.server_info() {
            Some(server) if server.version < tern_proto::FILTERS_VERSION => {
                Err(ClientError::Unsupported {
                    feature: "a header filter",
                    version: server.version,
                    needed: tern_proto::FILTERS_VERSION,
                })
            }
            _ => Ok(()),
        }
    }

    async fn subscribe_with(
        &self,
        pattern: &str,
        filter: Option<bytestring::ByteString>,
    ) -> Result<Subscription, ClientError> {
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
            .add_subscription(spec, filter, Sink::Broadcast(Arc::new(sender)))
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
        self.queue_subscribe_with(queue, pattern, prefetch, None)
            .await
    }

    /// Like [`Client::queue_subscribe_bound`] (an empty `pattern` joins the queue as
    /// it is bound, or binds a new one to its name), but this consumer gets only the
    /// queue's messages whose headers match `filter`. Each message still goes to
    /// exactly one consumer whose filter matches; one that matches no consumer
    /// waits in the queue without holding up the others. The filter is checked here
    /// first ([`ClientError::InvalidFilter`]).
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut device = client
    ///     .queue_subscribe_filtered("user.event.delivery", "", 16, "profile_id = 'u1' AND device_id = 'd1'")
    ///     .await?;
    /// while let Some(delivery) = device.next().await {
    ///     delivery.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queue_subscribe_filtered(
        &self,
        queue: &str,
        pattern: &str,
        prefetch: u32,
        filter: &str,
    ) -> Result<QueueSubscription, ClientError> {
        self.check_filter(filter)?;
        self.queue_subscribe_with(queue, pattern, prefetch, Some(filter.into()))
            .await
    }

    async fn queue_subscribe_with(
        &self,
        queue: &str,
        pattern: &str,
        prefetch: u32,
        filter: Option<bytestring::ByteString>,
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
            .add_subscription(spec, filter, Sink::Queue(Arc::new(sender)))
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
        self.inner
            .write_request(&Frame::Ping, |state| state.pings.push_back(sender))?;
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
}
