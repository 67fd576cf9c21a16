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
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::outbound::Outbox;

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
    connections: Mutex<HashMap<u64, Arc<Outbox>>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
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

    /// Lists a connection that took a slot, by its outbox (which holds its
    /// [`Connection`](crate::connection::Connection) record).
    pub fn register(&self, outbox: Arc<Outbox>) {
        self.lock().insert(outbox.connection_id(), outbox);
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

    /// Every registered connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let outboxes: Vec<Arc<Outbox>> = self.lock().values().cloned().collect();
        let mut infos: Vec<ConnectionInfo> = outboxes.iter().map(|outbox| info(outbox)).collect();
        infos.sort_unstable_by_key(|info| info.id);
        infos
    }

    /// Closes connection `id` on an operator's request: what is queued for it is
    /// written, then its socket is shut down and its session ends, counted as
    /// `closed_by_admin` (as for any disconnect, its unacked deliveries are
    /// requeued). A connection still in its handshake closes when the handshake
    /// ends. Returns whether it was open.
    pub fn close(&self, id: u64) -> bool {
        let Some(outbox) = self.lock().get(&id).cloned() else {
            return false;
        };
        outbox.connection().mark_closed_by_admin();
        outbox.close();
        true
    }
}

/// A point-in-time description of the connection `outbox` writes to.
fn info(outbox: &Outbox) -> ConnectionInfo {
    let connection = outbox.connection();
    let (sent_bytes, sent_messages) = outbox.sent();
    let (received_bytes, received_messages) = connection.received();
    let (connected_at_unix_ms, connected_for_ms) = connection.connected();
    let client = connection.client();
    ConnectionInfo {
        id: connection.id(),
        peer: connection.peer(),
        name: client.map(|(name, _)| name.to_owned()),
        role: client.map(|(_, role)| role),
        subscriptions: connection.subscriptions(),
        received_bytes,
        received_messages,
        sent_bytes,
        sent_messages,
        pending_bytes: outbox.pending_bytes(),
        connected_at_unix_ms,
        connected_for_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::connection::Connection;
    use crate::stats::Stats;
    use tern_proto::Role;

    #[test]
    fn slots_are_bounded_and_closing_lists_and_frees() {
        let registry = ConnectionRegistry::new(2);
        let first = registry.open().expect("a slot");
        let second = registry.open().expect("a slot");
        assert_eq!(registry.open(), None, "at the limit");
        let outbox = Outbox::for_connection(
            Connection::new(first, "127.0.0.1:1".parse().expect("addr")),
            crate::outbound::OutboxLimits {
                broadcast_messages: 10,
                broadcast_bytes: usize::MAX,
                stall_limit: crate::outbound::STALL_LIMIT,
            },
            Arc::new(Stats::new()),
            clock::now(),
        );
        registry.register(outbox.clone());
        let connection = outbox.connection();
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
        assert!(connection.closed_by_admin());
        assert!(!registry.close(second), "taken a slot, never registered");
        registry.close_slot(first);
        registry.close_slot(second);
        assert!(registry.is_empty());
        assert!(registry.list().is_empty());
    }
}
