//! The connection registry: every open client connection by id, with what an
//! operator (an admin API) needs to list and close it.
//!
//! A connection takes a slot when it is accepted (bounded by `MAX_CONNECTIONS`),
//! registers once its outbox exists, and is removed when its session ends. The
//! counters are updated by the hot paths once per read batch (session) or written
//! batch (writer), with relaxed atomics; listing reads them without stopping anyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tern_proto::Role;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Instant};
use crate::outbound::Outbox;

/// What the client said about itself in HELLO.
#[derive(Debug, Clone)]
struct ClientInfo {
    name: Box<str>,
    role: Role,
}

/// One open connection as the registry sees it.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    peer: SocketAddr,
    connected_at: SystemTime,
    since: Instant,
    client: OnceLock<ClientInfo>,
    outbox: Arc<Outbox>,
    received_bytes: AtomicU64,
    received_messages: AtomicU64,
    subscriptions: AtomicUsize,
    close: CancellationToken,
}

impl Connection {
    /// A connection from `peer` writing through `outbox`. `close` ends it: a child
    /// of the broker's shutdown token, so the session watches one token for both.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        outbox: Arc<Outbox>,
        close: CancellationToken,
    ) -> Arc<Connection> {
        Arc::new(Connection {
            id,
            peer,
            connected_at: SystemTime::now(),
            since: clock::now(),
            client: OnceLock::new(),
            outbox,
            received_bytes: AtomicU64::new(0),
            received_messages: AtomicU64::new(0),
            subscriptions: AtomicUsize::new(0),
            close,
        })
    }

    /// The connection id (WELCOME's `connection_id`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records the client's name and role after the handshake. The name is copied:
    /// holding the HELLO frame's slice would pin the read buffer.
    pub fn identify(&self, name: &str, role: Role) {
        let _ = self.client.set(ClientInfo {
            name: name.into(),
            role,
        });
    }

    /// Counts bytes read from the client.
    pub fn count_received_bytes(&self, bytes: u64) {
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts messages the client published.
    pub fn count_received_messages(&self, messages: u64) {
        if messages != 0 {
            self.received_messages
                .fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// Sets the number of active subscriptions.
    pub fn set_subscriptions(&self, count: usize) {
        self.subscriptions.store(count, Ordering::Relaxed);
    }

    /// Cancelled when an operator asked to close this connection, or when the
    /// broker shuts down (it is a child of the shutdown token).
    pub fn close_token(&self) -> &CancellationToken {
        &self.close
    }

    /// A point-in-time description.
    pub fn info(&self) -> ConnectionInfo {
        let client = self.client.get();
        let (sent_bytes, sent_messages) = self.outbox.sent();
        ConnectionInfo {
            id: self.id,
            peer: self.peer,
            name: client.map(|client| client.name.to_string()),
            role: client.map(|client| role_name(client.role)),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            sent_bytes,
            sent_messages,
            pending_bytes: self.outbox.pending_bytes(),
            connected_at_unix_ms: self
                .connected_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                }),
            connected_for_ms: u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Producer => "producer",
        Role::Consumer => "consumer",
        Role::Both => "both",
    }
}

/// A connection as an admin API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection id.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// HELLO's client name (`None` before the handshake).
    pub name: Option<String>,
    /// HELLO's role: `producer`, `consumer` or `both` (`None` before the handshake).
    pub role: Option<&'static str>,
    /// Active subscriptions.
    pub subscriptions: usize,
    /// Bytes read from the client.
    pub received_bytes: u64,
    /// Messages the client published.
    pub received_messages: u64,
    /// Frame bytes written to the client.
    pub sent_bytes: u64,
    /// Deliveries written to the client.
    pub sent_messages: u64,
    /// Bytes waiting to be written to the client.
    pub pending_bytes: usize,
    /// When it connected (milliseconds since the Unix epoch).
    pub connected_at_unix_ms: u64,
    /// How long it has been connected.
    pub connected_for_ms: u64,
}

/// Every open connection, and the `MAX_CONNECTIONS` slots.
#[derive(Debug)]
pub struct ConnectionRegistry {
    max: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl ConnectionRegistry {
    /// A registry admitting at most `max` connections at once.
    pub fn new(max: usize) -> Self {
        ConnectionRegistry {
            max,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes a slot and an id, or `None` when `max` connections are open.
    pub fn open(&self) -> Option<u64> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .ok()?;
        Some(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Lists a connection that took a slot.
    pub fn register(&self, connection: Arc<Connection>) {
        self.lock().insert(connection.id, connection);
    }

    /// Forgets connection `id` and gives its slot back.
    pub fn close_slot(&self, id: u64) {
        self.lock().remove(&id);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open connections (slots taken).
    pub fn len(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most connections admitted at once (`MAX_CONNECTIONS`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Every registered connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let connections: Vec<Arc<Connection>> = self.lock().values().cloned().collect();
        let mut infos: Vec<ConnectionInfo> = connections.iter().map(|c| c.info()).collect();
        infos.sort_unstable_by_key(|info| info.id);
        infos
    }

    /// Asks connection `id` to close (its unacked deliveries are requeued, as for
    /// any disconnect). Returns whether it was open.
    pub fn close(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(connection) => {
                connection.close.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    #[test]
    fn slots_are_bounded_and_closing_lists_and_frees() {
        let registry = ConnectionRegistry::new(2);
        let first = registry.open().expect("a slot");
        let second = registry.open().expect("a slot");
        assert_eq!(registry.open(), None, "at the limit");
        let outbox = Outbox::new(first, 10, Arc::new(Stats::new()), clock::now());
        let connection = Connection::new(
            first,
            "127.0.0.1:1".parse().expect("addr"),
            outbox,
            CancellationToken::new(),
        );
        registry.register(connection.clone());
        connection.identify("worker", Role::Consumer);
        connection.count_received_bytes(10);
        connection.count_received_messages(2);
        let listed = registry.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name.as_deref(), Some("worker"));
        assert_eq!(listed[0].role, Some("consumer"));
        assert_eq!(
            (listed[0].received_bytes, listed[0].received_messages),
            (10, 2)
        );
        assert!(registry.close(first));
        assert!(connection.close.is_cancelled());
        assert!(!registry.close(second), "taken a slot, never registered");
        registry.close_slot(first);
        registry.close_slot(second);
        assert!(registry.is_empty());
        assert!(registry.list().is_empty());
    }
}
