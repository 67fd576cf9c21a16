//! One client's connection: handshake, then frames in → broker → frames out.
//!
//! - this module — [`serve_connection`] (a connection's whole life) and the
//!   session's run loop: read, handle every complete frame, wait again;
//! - [`handshake`] — HELLO/WELCOME, refusing connections over the limit;
//! - `handlers.rs` — one handler per client frame (publish, ack, credit, ping);
//! - `subscriptions.rs` — SUBSCRIBE / UNSUBSCRIBE and detaching on close;
//! - `access.rs` — the user's permissions (`AUTH_FILE`), kept current on reload;
//! - `keepalive.rs` — PING after silence, close when stale;
//! - `queue_admin.rs` — QUEUE_LIST / QUEUE_PURGE / QUEUE_DELETE;
//! - `route_cache.rs` — subject → routes, revalidated by one atomic load;
//! - `drain.rs` — this connection's part of the shutdown sequence.
//!
//! A protocol error ends this connection only. Whatever ends a session, its
//! subscriptions are detached and its unacked queue deliveries go back to their
//! queues; why it ended is one [`CloseReason`], logged and counted once.

mod access;
mod drain;
mod handlers;
pub mod handshake;
mod keepalive;
mod queue_admin;
mod route_cache;
mod subscriptions;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::transport::ReadSource;
use tern_proto::{ErrorCode, Role};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::broker::Broker;
use crate::clock::{self, Instant, Stamp};
use crate::close_reason::CloseReason;
use crate::connection::Connection;
use crate::outbound::{run_writer, Outbox, OutboxLimits, WriterExit};
use crate::routing::Touched;
use crate::stats::Stats;
use crate::transport::{FrameReader, Transport};
use access::{access_changed, Access};
use handshake::{handshake, refuse_connection, Agreed, FINAL_FLUSH_TIMEOUT};
use keepalive::{Keepalive, Tick};
use route_cache::RouteCache;
use subscriptions::Subscription;

pub use handshake::SERVER_NAME;

/// Serves one accepted connection, over any [`Transport`], until it closes.
///
/// Not an `async fn` of its own: a wrapper would keep its arguments in every
/// connection's future beside the one it awaits.
pub fn serve_connection<T: Transport>(
    transport: T,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    serve_connection_as(transport, peer, Vec::new(), broker, shutdown)
}

/// [`serve_connection`] for a client whose verified TLS certificate carries
/// `certificate_names` (its CN and SANs), which `AUTH_FILE` may map to a user.
pub async fn serve_connection_as<T: Transport>(
    transport: T,
    peer: SocketAddr,
    certificate_names: Vec<Box<str>>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let (read_half, write_half) = transport.into_halves();
    let Some(connection_id) = broker.open_connection() else {
        refuse_connection(write_half, &broker).await;
        return;
    };
    let config = broker.config();
    let outbox = Outbox::for_connection(
        Connection::new(connection_id, peer),
        OutboxLimits {
            broadcast_messages: config.consumer_channel_buffer_size,
            broadcast_bytes: config.consumer_channel_buffer_bytes,
            stall_limit: config.slow_consumer_stall,
        },
        broker.stats().clone(),
        broker.started(),
    );
    broker.connections().register(outbox.clone());
    let mut writer = tokio::spawn(run_writer(
        write_half,
        outbox.clone(),
        config.write_deadline,
    ));
    let mut reader = FrameReader::new(read_half, config.max_frame_bytes);

    let reason = match handshake(&mut reader, &outbox, &broker, peer, &certificate_names).await {
        Ok(Agreed {
            role,
            version,
            authenticated,
        }) => {
            drop(certificate_names);
            let mut session = Session {
                id: connection_id,
                broker: broker.clone(),
                outbox: outbox.clone(),
                role,
                version,
                subscriptions: FxHashMap::default(),
                routes: RouteCache::default(),
                draining: false,
                published: 0,
                next_stamp: 0,
                touched: Touched::default(),
                owed_confirms: None,
                access: authenticated.map(|authenticated| Box::new(Access { authenticated })),
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
    broker.close_connection(connection_id);
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

/// What handling the buffered frames ended with.
enum Processed {
    /// Every complete frame was handled, or publishes filled a subscriber's buffer
    /// over half and the rest waits until it drained (`Session::touched`).
    Drained,
    /// Stopped: too many answers wait for the client to read them.
    Blocked,
    /// The connection must close.
    Close(CloseReason),
}

/// `wait()` when `condition`, else never. The wait is boxed, and made only when it
/// is needed: the session's future, kept per connection, stays as small as an idle
/// connection needs (these waits are rare; their timers and notifications are not).
async fn when<F: std::future::Future<Output = ()>>(condition: bool, wait: impl FnOnce() -> F) {
    if condition {
        Box::pin(wait()).await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Waits for each backlogged queue in turn (see [`crate::queue::Queue::wait_for_backlog`]).
async fn wait_for_backlogs(queues: &[Arc<crate::queue::Queue>], stall: std::time::Duration) {
    for queue in queues {
        queue.wait_for_backlog(stall).await;
    }
}

/// Waits until the store's writer has room (see [`crate::store::Store::backlogged`]).
async fn wait_for_store(broker: &Broker) {
    if let Some(store) = broker.store() {
        store.wait_for_room().await;
    }
}

/// Waits for each outbox in turn to drain (or to be found stalled).
async fn drain_all(outboxes: &[Arc<Outbox>]) {
    for outbox in outboxes {
        outbox.wait_for_drain().await;
    }
}

/// One handshaken client.
struct Session {
    id: u64,
    broker: Arc<Broker>,
    outbox: Arc<Outbox>,
    role: Role,
    /// The protocol version agreed in the handshake.
    version: u16,
    subscriptions: FxHashMap<u32, Subscription>,
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
    /// Answers to confirmed publishes still waiting for the store (shared with
    /// each [`crate::store::PendingConfirm`]).
    /// Made with the first such answer (only a broker with a store defers them).
    owed_confirms: Option<Arc<crate::store::OwedConfirms>>,
    /// The `AUTH_FILE` user and its permissions (`None`: no auth file, all allowed).
    access: Option<Box<Access>>,
}

impl Session {
    /// Reads and handles frames until the connection must close; says why.
    async fn run<R: ReadSource>(
        &mut self,
        reader: &mut FrameReader<R>,
        writer: &mut JoinHandle<WriterExit>,
        shutdown: &CancellationToken,
    ) -> CloseReason {
        let grace = self.broker.config().shutdown_grace;
        let mut keepalive = Keepalive::new(self.broker.config().ping_interval);
        let keepalive_timer = sleep_until(keepalive.deadline());
        tokio::pin!(keepalive_timer);
        let mut drain_deadline: Option<Instant> = None;
        let mut auth_changes = match (&self.access, self.broker.security().auth()) {
            (Some(_), Some(auth)) => Some(auth.watch()),
            _ => None,
        };
        loop {
            // A reload that landed since the last batch applies before this one.
            if let Some(changes) = &mut auth_changes {
                if changes.has_changed().unwrap_or(false) {
                    changes.borrow_and_update();
                    if let Err(reason) = self.on_access_changed() {
                        return reason;
                    }
                }
            }
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
            let backlogged = self.touched.take_backlogged();
            let queue_pressured = !backlogged.is_empty();
            let store_backlogged = self.broker.store().is_some_and(|store| store.backlogged());
            let confirms_owed = self.draining && self.owed_confirms() > 0;
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(clock::now() + grace);
                    self.begin_drain(grace);
                    if self.nothing_to_settle() {
                        return self.answer_what_has_arrived(reader).await;
                    }
                }
                _ = sleep_until(drain_deadline.unwrap_or_else(clock::now)), if drain_deadline.is_some() => {
                    return CloseReason::ShutDown;
                }
                exit = &mut *writer => {
                    return match exit {
                        Ok(WriterExit::Failed(_)) | Err(_) => CloseReason::WriteFailed,
                        Ok(WriterExit::TimedOut) => CloseReason::SlowConsumer,
                        // Only an operator's close makes the writer close first.
                        Ok(WriterExit::Closed) if self.outbox.connection().closed_by_admin() => CloseReason::ClosedByAdmin,
                        Ok(WriterExit::Closed) => CloseReason::ClientClosed,
                    };
                }
                // The client is not reading its answers: read nothing more from it
                // until the writer makes room.
                _ = self.outbox.wait_for_control_room(), if blocked => {}
                () = when(auth_changes.is_some(), || access_changed(&mut auth_changes)) => {
                    if let Err(reason) = self.on_access_changed() {
                        return reason;
                    }
                }
                () = &mut keepalive_timer => {
                    let tick = keepalive.on_tick();
                    keepalive_timer.as_mut().reset(keepalive.deadline());
                    match tick {
                        Tick::Quiet => {}
                        Tick::Ping => self.outbox.push_control(tern_proto::Frame::Ping),
                        Tick::Stale => {
                            self.send_error(ErrorCode::StaleConnection, 0, format!("no traffic for {} s after PING", keepalive.interval().as_secs()));
                            return CloseReason::Stale;
                        }
                    }
                }
                () = drain_all(&pressure), if pressured => {}
                // Rare waits, one branch: a queue's backlog; the store's writer
                // behind (read nothing more until it catches up); draining, the
                // store's answers to the confirmed publishes taken.
                () = when(queue_pressured || store_backlogged || confirms_owed, || self.rare_wait(&backlogged, store_backlogged)) => {}
                read = reader.fill(), if !blocked && !pressured && !queue_pressured && !store_backlogged => match read {
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
                        keepalive.heard_from_client();
                        Stats::add(&self.broker.stats().bytes_in, read as u64);
                        self.outbox.connection().count_received_bytes(read as u64);
                    }
                    Err(_) => return CloseReason::ReadFailed,
                },
            }
            // Waited for or not, these outboxes are done with; keep the allocation.
            pressure.clear();
            self.touched.pressure = pressure;
        }
    }

    /// Waits for the backlogged queues, else for the store's writer, else for the
    /// store's answers owed (see the run loop).
    async fn rare_wait(&self, backlogged: &[Arc<crate::queue::Queue>], store_backlogged: bool) {
        if !backlogged.is_empty() {
            wait_for_backlogs(backlogged, self.broker.config().slow_consumer_stall).await;
        } else if store_backlogged {
            wait_for_store(&self.broker).await;
        } else if let Some(owed) = &self.owed_confirms {
            owed.wait_settled().await;
        }
    }

    /// Answers to confirmed publishes still waiting for the store.
    pub(super) fn owed_confirms(&self) -> u32 {
        self.owed_confirms.as_ref().map_or(0, |owed| owed.count())
    }

    /// Adds this batch's publishes to the broker's and the connection's counters.
    fn flush_counters(&mut self) {
        let published = std::mem::take(&mut self.published);
        Stats::add(&self.broker.stats().published, published);
        self.outbox.connection().count_received_messages(published);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::transport::Stream;
    use bytes::BytesMut;
    use tern_proto::{codec, Frame, Hello};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The transport seam: a session served over an in-memory pipe (standing in for
    /// TLS or WebSocket) speaks the same protocol as over TCP.
    #[tokio::test]
    async fn a_session_runs_over_any_duplex_stream() {
        let broker = Arc::new(Broker::new(Config::default()));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let shutdown = CancellationToken::new();
        let session = tokio::spawn(serve_connection(
            Stream(server),
            "127.0.0.1:1".parse().expect("address"),
            broker.clone(),
            shutdown.clone(),
        ));
        let hello = Frame::Hello(Hello {
            version: 1,
            role: Role::Both,
            client_name: "pipe".into(),
            auth_token: "".into(),
        });
        client
            .write_all(&hello.to_bytes().expect("encodes"))
            .await
            .expect("write");
        let mut buffer = BytesMut::new();
        let frame = loop {
            if let Some(frame) = codec::decode(&mut buffer, u32::MAX).expect("valid") {
                break frame;
            }
            assert!(client.read_buf(&mut buffer).await.expect("read") > 0);
        };
        assert!(matches!(frame, Frame::Welcome(_)), "{frame:?}");
        let listed = broker.connections().list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name.as_deref(), Some("pipe"));
        assert!(broker.connections().close(listed[0].id));
        session.await.expect("session ends");
        assert_eq!(
            broker.stats().snapshot().connections_closed["closed_by_admin"],
            1
        );
        assert!(broker.connections().is_empty());
    }
}

#[cfg(test)]
mod future_sizes {
    use super::*;
    use crate::config::Config;

    /// What an idle connection keeps in memory is mostly these futures, so they
    /// must not grow by accident (2,032 bytes before TLS and authentication, 2,184
    /// with them; debug build, this toolchain). Features that need more state keep
    /// it behind a box made only when used (see `when`).
    #[tokio::test]
    async fn an_idle_connection_s_futures_stay_small() {
        let broker = Arc::new(Broker::new(Config::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("address"));
        let (server, _client) = tokio::join!(listener.accept(), client);
        let (stream, peer) = server.expect("accepted");
        let serve = serve_connection(stream, peer, broker.clone(), CancellationToken::new());
        let size = std::mem::size_of_val(&serve);
        assert!(
            size <= 2_240,
            "a connection's session future is {size} bytes"
        );
        assert!(std::mem::size_of::<Connection>() <= 168);
    }
}
