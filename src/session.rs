//! One client's connection: handshake, then frames in → broker → frames out.
//!
//! A session reads whatever the socket has, handles every complete frame in it,
//! and only then waits again; answers go to the connection's [`Outbox`], which the
//! writer task flushes in batches. A protocol error ends this connection only.
//! Whatever ends a session, its subscriptions are detached and its unacked queue
//! deliveries go back to their queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use rustc_hash::FxHashMap;
use tern_proto::subject::{validate_pattern, validate_subject, SubjectError};
use tern_proto::{
    DeliveryMode, ErrorCode, Frame, Goodbye, Publish, Role, Subscribe, Welcome, SUPPORTED_VERSIONS,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::broker::{Broker, Refusal, Routes};
use crate::config::MAX_PREFETCH;
use crate::connection::{FrameReader, ReadError};
use crate::outbox::{run_writer, MissedCounter, Outbox, WriterExit};
use crate::queue::{delivery_sid, Queue};
use crate::stats::{Stamp, Stats};
use crate::topic::{BroadcastTarget, Touched};

/// How long a closing connection's writer gets to flush its last frames.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Subjects whose routes a session remembers. Past this the cache starts over, so a
/// publisher cycling through unique subjects costs bounded memory (at most ~128 KiB
/// of subjects per connection). nats-server caps its per-client cache at 512 too.
const ROUTE_CACHE_ENTRIES: usize = 512;

/// The server software name sent in WELCOME.
pub const SERVER_NAME: &str = concat!("tern/", env!("CARGO_PKG_VERSION"));

/// Why a connection ended. Logged once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection.
    ClientClosed,
    /// The client broke the protocol; it was sent this error first.
    ProtocolViolation(ErrorCode),
    /// No HELLO in time.
    HandshakeTimeout,
    /// No traffic in answer to keepalive PINGs.
    Stale,
    /// The broker shut down.
    ShutDown,
    /// Reading the socket failed.
    ReadFailed,
    /// Writing the socket failed.
    WriteFailed,
    /// The client did not read for longer than the write deadline.
    SlowConsumer,
}

impl CloseReason {
    /// Number of distinct labels (for counters indexed by [`CloseReason::index`]).
    pub const COUNT: usize = 8;

    /// Every label, in index order.
    pub const LABELS: [&'static str; CloseReason::COUNT] = [
        "client_closed",
        "protocol_violation",
        "handshake_timeout",
        "stale",
        "shutdown",
        "read_failed",
        "write_failed",
        "slow_consumer",
    ];

    /// Position of this reason's label in [`CloseReason::LABELS`].
    pub fn index(self) -> usize {
        match self {
            CloseReason::ClientClosed => 0,
            CloseReason::ProtocolViolation(_) => 1,
            CloseReason::HandshakeTimeout => 2,
            CloseReason::Stale => 3,
            CloseReason::ShutDown => 4,
            CloseReason::ReadFailed => 5,
            CloseReason::WriteFailed => 6,
            CloseReason::SlowConsumer => 7,
        }
    }

    /// A stable label for logs and counters.
    pub fn as_str(self) -> &'static str {
        CloseReason::LABELS[self.index()]
    }
}

/// Serves one accepted TCP connection until it closes.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    // We batch our own writes; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let Some(connection_id) = broker.open_connection() else {
        refuse_connection(stream, &broker).await;
        return;
    };
    let config = broker.config();
    let (read_half, write_half) = stream.into_split();
    let outbox = Outbox::new(
        connection_id,
        config.consumer_channel_buffer_size,
        broker.stats().clone(),
        broker.started(),
    );
    let mut writer = tokio::spawn(run_writer(
        write_half,
        outbox.clone(),
        config.write_deadline,
    ));
    let mut reader = FrameReader::new(read_half, config.max_frame_bytes);

    let reason = match handshake(&mut reader, &outbox, &broker, connection_id, peer).await {
        Ok(role) => {
            let mut session = Session {
                id: connection_id,
                broker: broker.clone(),
                outbox: outbox.clone(),
                role,
                subscriptions: HashMap::new(),
                routes: RouteCache::default(),
                draining: false,
                published: 0,
                next_stamp: 0,
                touched: Touched::default(),
            };
            let reason = session.run(&mut reader, &mut writer, &shutdown).await;
            session.detach_all();
            reason
        }
        Err(reason) => reason,
    };
    outbox.close();
    if !writer.is_finished() && timeout(FINAL_FLUSH_TIMEOUT, &mut writer).await.is_err() {
        writer.abort();
    }
    broker.close_connection();
    broker.stats().count_close(reason);
    match reason {
        CloseReason::ClientClosed | CloseReason::ShutDown => {
            debug!(connection = connection_id, %peer, reason = reason.as_str(), "connection closed")
        }
        CloseReason::ProtocolViolation(code) => {
            info!(connection = connection_id, %peer, reason = reason.as_str(), code = code.name(), "connection closed")
        }
        _ => {
            info!(connection = connection_id, %peer, reason = reason.as_str(), "connection closed")
        }
    }
}

/// Tells a client over `MAX_CONNECTIONS` why, then closes.
async fn refuse_connection(mut stream: TcpStream, broker: &Broker) {
    Stats::add(&broker.stats().connections_refused, 1);
    let max = broker.config().max_connections;
    let frame = Frame::error(
        ErrorCode::TooManyConnections,
        0,
        format!("connection limit of {max} (MAX_CONNECTIONS) reached"),
    );
    if let Ok(bytes) = frame.to_bytes() {
        let _ = timeout(FINAL_FLUSH_TIMEOUT, async {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

/// Waits for HELLO and answers WELCOME, or explains what went wrong.
/// Returns only the role: the client's name is logged here and not kept, since it is
/// a slice of the read buffer and holding it would pin that buffer for the
/// connection's whole life.
async fn handshake(
    reader: &mut FrameReader,
    outbox: &Outbox,
    broker: &Broker,
    connection_id: u64,
    peer: SocketAddr,
) -> Result<Role, CloseReason> {
    let config = broker.config();
    let reject = |code: ErrorCode, message: String| {
        outbox.push_control(Frame::error(code, 0, message));
        Err(CloseReason::ProtocolViolation(code))
    };
    let frame = match timeout(config.handshake_timeout, reader.next_frame()).await {
        Err(_elapsed) => {
            outbox.push_control(Frame::error(
                ErrorCode::HandshakeTimeout,
                0,
                format!(
                    "no HELLO within {} ms",
                    config.handshake_timeout.as_millis()
                ),
            ));
            return Err(CloseReason::HandshakeTimeout);
        }
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return Err(CloseReason::ClientClosed),
        Ok(Err(ReadError::Protocol(error))) if error.is_recoverable() => {
            return reject(
                ErrorCode::HandshakeRequired,
                format!("expected HELLO first, got {error}"),
            )
        }
        Ok(Err(ReadError::Protocol(error))) => {
            return reject(error.error_code(), error.to_string())
        }
        Ok(Err(ReadError::Io(_))) => return Err(CloseReason::ReadFailed),
    };
    let Frame::Hello(hello) = frame else {
        return reject(
            ErrorCode::HandshakeRequired,
            format!("expected HELLO first, got {:?}", frame.opcode()),
        );
    };
    if !SUPPORTED_VERSIONS.contains(&hello.version) {
        let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(ToString::to_string).collect();
        return reject(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; supported versions: {}",
                hello.version,
                supported.join(", ")
            ),
        );
    }
    outbox.push_control(Frame::Welcome(Welcome {
        version: hello.version,
        connection_id,
        max_frame_bytes: config.max_frame_bytes,
        max_subject_length: tern_proto::subject::MAX_SUBJECT_LENGTH as u16,
        max_subscriptions: u32::try_from(config.max_consumers).unwrap_or(u32::MAX),
        default_prefetch: config.default_prefetch,
        server_name: SERVER_NAME.into(),
    }));
    debug!(connection = connection_id, %peer, client = %hello.client_name, role = ?hello.role, "client connected");
    Ok(hello.role)
}

/// What handling the buffered frames ended with.
enum Processed {
    /// Every complete frame was handled, or publishes filled a subscriber's buffer
    /// over half and the rest waits until it drained (`Session::pressure`).
    Drained,
    /// Stopped: too many answers wait for the client to read them.
    Blocked,
    /// The connection must close.
    Close(CloseReason),
}

/// An active subscription of this connection.
#[derive(Debug)]
enum Subscription {
    Broadcast { pattern: ByteString },
    Queue { queue: Arc<Queue> },
}

/// Waits for each outbox in turn to drain (or to be found stalled).
async fn drain_all(outboxes: &[Arc<Outbox>]) {
    for outbox in outboxes {
        outbox.wait_for_drain().await;
    }
}

/// Remembers what subjects route to, valid while the broker's routing generation
/// is unchanged: the steady-state publish path takes no lock.
#[derive(Debug, Default)]
struct RouteCache {
    generation: u64,
    /// The last subject looked up and its routes: a publisher usually publishes to
    /// the same subject again, which then costs one comparison.
    last_subject: String,
    last_routes: Option<Arc<Routes>>,
    /// FxHash rather than SipHash: the cache is per connection, so a client that
    /// crafts colliding subjects slows only itself, and only up to
    /// [`ROUTE_CACHE_ENTRIES`].
    entries: FxHashMap<Box<str>, Arc<Routes>>,
}

impl RouteCache {
    /// The routes of a publish subject. Only subjects that passed validation are
    /// cached, so a hit needs no validation.
    fn lookup(&mut self, subject: &str, broker: &Broker) -> Result<Arc<Routes>, SubjectError> {
        let generation = broker.routing_generation();
        if generation != self.generation {
            self.entries.clear();
            self.last_routes = None;
            self.generation = generation;
        }
        if let Some(routes) = &self.last_routes {
            if self.last_subject == subject {
                return Ok(routes.clone());
            }
        }
        let routes = match self.entries.get(subject) {
            Some(routes) => routes.clone(),
            None => {
                validate_subject(subject)?;
                let routes = Arc::new(broker.routes_for(subject));
                if self.entries.len() >= ROUTE_CACHE_ENTRIES {
                    self.entries.clear();
                }
                self.entries.insert(subject.into(), routes.clone());
                routes
            }
        };
        self.last_subject.clear();
        self.last_subject.push_str(subject);
        self.last_routes = Some(routes.clone());
        Ok(routes)
    }
}

struct Session {
    id: u64,
    broker: Arc<Broker>,
    outbox: Arc<Outbox>,
    role: Role,
    subscriptions: HashMap<u32, Subscription>,
    routes: RouteCache,
    draining: bool,
    published: u64,
    /// The latency stamp for the next publish: set once per read batch, taken by the
    /// batch's first publish (sampling keeps the clock off the per-message path).
    next_stamp: Stamp,
    /// Subscribers' outboxes this read batch's publishes touched: those filled over
    /// half get to drain before the session reads more (publisher flow control),
    /// and idle writers are woken when the batch is done.
    touched: Touched,
}

impl Session {
    async fn run(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut JoinHandle<WriterExit>,
        shutdown: &CancellationToken,
    ) -> CloseReason {
        let config = self.broker.config();
        let ping_interval = config.ping_interval;
        let grace = config.shutdown_grace;
        let mut keepalive = interval_at(Instant::now() + ping_interval, ping_interval);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard_from_client = false;
        let mut ping_outstanding = false;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let blocked = match self.process_buffered(reader) {
                Processed::Drained => false,
                Processed::Blocked => true,
                Processed::Close(reason) => {
                    self.flush_counters();
                    return reason;
                }
            };
            self.flush_counters();
            // Publisher flow control: subscribers this batch filled over half get to
            // drain before the next read (bounded: see Outbox::wait_for_drain).
            let mut pressure = std::mem::take(&mut self.touched.pressure);
            let pressured = !pressure.is_empty();
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + grace);
                    self.begin_drain(grace);
                    if self.nothing_to_settle() {
                        return CloseReason::ShutDown;
                    }
                }
                _ = sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {
                    return CloseReason::ShutDown;
                }
                exit = &mut *writer => {
                    return match exit {
                        Ok(WriterExit::Failed(_)) | Err(_) => CloseReason::WriteFailed,
                        Ok(WriterExit::TimedOut) => CloseReason::SlowConsumer,
                        Ok(WriterExit::Closed) => CloseReason::ClientClosed,
                    };
                }
                // The client is not reading its answers: read nothing more from it
                // until the writer makes room.
                _ = self.outbox.wait_for_control_room(), if blocked => {}
                _ = keepalive.tick() => {
                    if heard_from_client {
                        heard_from_client = false;
                        ping_outstanding = false;
                    } else if ping_outstanding {
                        self.send_error(ErrorCode::StaleConnection, 0, format!("no traffic for {} s after PING", ping_interval.as_secs()));
                        return CloseReason::Stale;
                    } else {
                        self.outbox.push_control(Frame::Ping);
                        ping_outstanding = true;
                    }
                }
                () = drain_all(&pressure), if pressured => {}
                read = reader.fill(), if !blocked && !pressured => match read {
                    Ok(0) => {
                        if reader.buffered_len() > 0 {
                            self.send_error(ErrorCode::MalformedFrame, 0, format!(
                                "connection closed in the middle of a frame ({} bytes of it received)", reader.buffered_len()
                            ));
                            return CloseReason::ProtocolViolation(ErrorCode::MalformedFrame);
                        }
                        return CloseReason::ClientClosed;
                    }
                    Ok(read) => {
                        heard_from_client = true;
                        Stats::add(&self.broker.stats().bytes_in, read as u64);
                    }
                    Err(_) => return CloseReason::ReadFailed,
                },
            }
            // Waited for or not, these outboxes are done with; keep the allocation.
            pressure.clear();
            self.touched.pressure = pressure;
        }
    }

    /// Handles the complete frames already buffered, stopping early when the
    /// client's unread answers reach the limit; then wakes the writers of the
    /// subscribers it delivered to (once each per batch).
    fn process_buffered(&mut self, reader: &mut FrameReader) -> Processed {
        let processed = self.process_frames(reader);
        self.touched.wake_writers();
        processed
    }

    fn process_frames(&mut self, reader: &mut FrameReader) -> Processed {
        self.next_stamp = self.broker.stamp_now();
        loop {
            if !self.outbox.has_control_room() {
                return Processed::Blocked;
            }
            // Matched by reference: a frame is not moved on its way to its handler.
            match &reader.next_buffered() {
                Ok(Some(frame)) => self.handle(frame),
                Ok(None) => return Processed::Drained,
                Err(error) if error.is_recoverable() => {
                    self.send_error(error.error_code(), 0, error.to_string())
                }
                Err(error) => {
                    let code = error.error_code();
                    self.send_error(code, 0, error.to_string());
                    return Processed::Close(CloseReason::ProtocolViolation(code));
                }
            }
            if self.draining && self.nothing_to_settle() {
                return Processed::Close(CloseReason::ShutDown);
            }
            if !self.touched.pressure.is_empty() {
                // A subscriber's buffer is over half full: let it drain before the
                // rest of this batch (the run loop comes back for it).
                return Processed::Drained;
            }
        }
    }

    fn handle(&mut self, frame: &Frame) {
        match frame {
            Frame::Publish(publish) => self.on_publish(publish),
            Frame::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Frame::Unsubscribe { sid } => self.on_unsubscribe(*sid),
            Frame::Ack { delivery_id } => self.on_settle(*delivery_id, None),
            Frame::Nack {
                delivery_id,
                requeue,
            } => self.on_settle(*delivery_id, Some(*requeue)),
            Frame::Credit { sid, prefetch } => self.on_credit(*sid, *prefetch),
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

    fn send_error(&self, code: ErrorCode, context: u64, message: impl Into<ByteString>) {
        self.outbox
            .push_control(Frame::error(code, context, message));
    }

    fn flush_counters(&mut self) {
        let stats = self.broker.stats();
        Stats::add(&stats.published, std::mem::take(&mut self.published));
    }

    fn require_role(&self, allowed: bool, action: &str) -> Result<(), Refusal> {
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
        let outcome = self.check_publish_allowed().and_then(|()| {
            let message = &publish.message;
            let routes = self
                .routes
                .lookup(message.subject(), &self.broker)
                .map_err(subject_refusal)?;
            let reply_to = message.reply_to();
            if let Some(reply_to) = reply_to {
                validate_subject(reply_to).map_err(|error| {
                    Refusal::new(error.error_code(), format!("reply-to: {error}"))
                })?;
            }
            // Routed borrowed from the decoded frame: nothing is moved or counted
            // per delivery; each subscriber's buffer gets its encoded copy.
            let stamp = std::mem::take(&mut self.next_stamp);
            self.broker.publish(
                &routes,
                message,
                reply_to.is_some(),
                stamp,
                &mut self.touched,
            )
        });
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

    fn check_publish_allowed(&self) -> Result<(), Refusal> {
        self.require_role(self.role.can_publish(), "publish")?;
        if self.draining {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    fn on_subscribe(&mut self, subscribe: &Subscribe) {
        let sid = subscribe.sid;
        if let Err(refusal) = self.subscribe(subscribe) {
            self.send_error(refusal.code, u64::from(sid), refusal.message);
        }
    }

    fn subscribe(&mut self, subscribe: &Subscribe) -> Result<(), Refusal> {
        let Subscribe {
            sid,
            mode,
            prefetch,
            ref pattern,
            ref queue,
        } = *subscribe;
        // These outlive the frame: give them their own allocation rather than keep the
        // connection's whole read buffer alive for as long as the subscription lasts.
        let pattern = ByteString::from(&**pattern);
        let queue = queue.as_ref().map(|name| ByteString::from(&**name));
        self.require_role(self.role.can_subscribe(), "subscribe")?;
        if self.draining {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        if self.subscriptions.contains_key(&sid) {
            return Err(Refusal::new(
                ErrorCode::DuplicateSubscription,
                format!("subscription id {sid} is already active"),
            ));
        }
        if prefetch > MAX_PREFETCH {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("prefetch {prefetch} is above the maximum of {MAX_PREFETCH}"),
            ));
        }
        // Naming a queue asks for queue delivery; only an explicit broadcast mode
        // contradicts it.
        let mode = match (mode, &queue) {
            (Some(DeliveryMode::Broadcast), Some(_)) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "a broadcast subscription cannot name a queue; use mode queue (2)",
                ))
            }
            (None, Some(_)) => DeliveryMode::Queue,
            (mode, _) => mode.unwrap_or(self.broker.config().delivery_mode),
        };
        match mode {
            DeliveryMode::Broadcast => {
                validate_pattern(&pattern).map_err(subject_refusal)?;
                self.broker.reserve_subscription(DeliveryMode::Broadcast)?;
                // SUBSCRIBE_OK goes out before anything can be delivered for it.
                self.outbox.push_control(Frame::SubscribeOk { sid });
                let missed = MissedCounter::default();
                self.outbox.watch_lag(sid, missed.clone());
                let target = BroadcastTarget {
                    sid,
                    outbox: self.outbox.clone(),
                    missed,
                };
                self.broker.add_subscriber(&pattern, target);
                self.subscriptions
                    .insert(sid, Subscription::Broadcast { pattern });
            }
            DeliveryMode::Queue => {
                let name = queue.unwrap_or_else(|| pattern.clone());
                validate_subject(&name).map_err(|error| {
                    Refusal::new(ErrorCode::InvalidQueueName, format!("queue name: {error}"))
                })?;
                let binding = if pattern.is_empty() {
                    self.broker
                        .queue(&name)
                        .map_or_else(|| name.clone(), |existing| existing.pattern().clone())
                } else {
                    validate_pattern(&pattern).map_err(subject_refusal)?;
                    pattern
                };
                self.broker.reserve_subscription(DeliveryMode::Queue)?;
                let queue = match self.broker.bind_queue(&name, &binding) {
                    Ok(queue) => queue,
                    Err(refusal) => {
                        self.broker.release_subscription(DeliveryMode::Queue);
                        return Err(refusal);
                    }
                };
                self.outbox.push_control(Frame::SubscribeOk { sid });
                let prefetch = if prefetch == 0 {
                    self.broker.config().default_prefetch
                } else {
                    prefetch
                };
                queue.add_consumer(self.id, sid, self.outbox.clone(), prefetch);
                self.subscriptions
                    .insert(sid, Subscription::Queue { queue });
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, sid: u32) {
        if let Err(refusal) = self.require_role(self.role.can_subscribe(), "unsubscribe") {
            return self.send_error(refusal.code, u64::from(sid), refusal.message);
        }
        match self.subscriptions.remove(&sid) {
            Some(subscription) => self.detach(sid, subscription),
            None => self.send_error(
                ErrorCode::UnknownSubscription,
                u64::from(sid),
                format!("no active subscription with id {sid}"),
            ),
        }
    }

    fn detach(&self, sid: u32, subscription: Subscription) {
        let mode = match subscription {
            Subscription::Broadcast { pattern } => {
                self.broker.remove_subscriber(&pattern, self.id, sid);
                self.outbox.unwatch_lag(sid);
                DeliveryMode::Broadcast
            }
            Subscription::Queue { queue } => {
                queue.remove_consumer(self.id, sid);
                DeliveryMode::Queue
            }
        };
        self.broker.release_subscription(mode);
    }

    fn detach_all(&mut self) {
        for (sid, subscription) in std::mem::take(&mut self.subscriptions) {
            self.detach(sid, subscription);
        }
    }

    fn on_settle(&mut self, delivery_id: u64, nack: Option<bool>) {
        if let Err(refusal) = self.require_role(self.role.can_subscribe(), "acknowledge") {
            return self.send_error(refusal.code, delivery_id, refusal.message);
        }
        let sid = delivery_sid(delivery_id);
        let result = match self.subscriptions.get(&sid) {
            Some(Subscription::Queue { queue }) => match nack {
                None => queue.ack(self.id, sid, delivery_id).map(|()| false),
                Some(requeue) => queue.nack(self.id, sid, delivery_id, requeue),
            },
            _ => Err(crate::queue::QueueError::UnknownDelivery(delivery_id)),
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

    fn begin_drain(&mut self, grace: Duration) {
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

    /// True when this connection holds no unacked queue delivery.
    fn nothing_to_settle(&self) -> bool {
        self.subscriptions
            .iter()
            .all(|(sid, subscription)| match subscription {
                Subscription::Broadcast { .. } => true,
                Subscription::Queue { queue } => queue.unacked_for(self.id, *sid) == 0,
            })
    }
}

fn subject_refusal(error: SubjectError) -> Refusal {
    Refusal::new(error.error_code(), error.to_string())
}
