//! Broker-wide counters: what flowed, what was dropped and why.
//!
//! Plain relaxed atomics; hot paths add to them once per batch rather than once
//! per message where they can. `/healthz` shows a snapshot; `/metrics` will export them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::session::CloseReason;

/// Monotonic counters, shared by every connection.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages accepted from publishers.
    pub published: AtomicU64,
    /// Broadcast deliveries written to subscribers.
    pub delivered_broadcast: AtomicU64,
    /// Queue deliveries written to consumers (redeliveries included).
    pub delivered_queue: AtomicU64,
    /// Queue deliveries that were redeliveries.
    pub redelivered: AtomicU64,
    /// Broadcast publishes that matched nobody.
    pub dropped_no_interest: AtomicU64,
    /// Broadcast messages dropped because a subscriber's buffer was full.
    pub dropped_slow_consumer: AtomicU64,
    /// Queue messages discarded by NACK without requeue.
    pub dropped_rejected: AtomicU64,
    /// Publishes refused (queue full, no responders, invalid, ...).
    pub publish_refused: AtomicU64,
    /// Frame bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Frame bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Connections closed, by [`CloseReason::index`].
    pub connections_closed: [AtomicU64; CloseReason::COUNT],
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatsSnapshot {
    pub published: u64,
    pub delivered_broadcast: u64,
    pub delivered_queue: u64,
    pub redelivered: u64,
    pub dropped_no_interest: u64,
    pub dropped_slow_consumer: u64,
    pub dropped_rejected: u64,
    pub publish_refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    /// Closed connections by reason label.
    pub connections_closed: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds `amount` to a counter.
    pub fn add(counter: &AtomicU64, amount: u64) {
        if amount != 0 {
            counter.fetch_add(amount, Ordering::Relaxed);
        }
    }

    /// Counts a closed connection under its reason.
    pub fn count_close(&self, reason: CloseReason) {
        Stats::add(&self.connections_closed[reason.index()], 1);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            published: read(&self.published),
            delivered_broadcast: read(&self.delivered_broadcast),
            delivered_queue: read(&self.delivered_queue),
            redelivered: read(&self.redelivered),
            dropped_no_interest: read(&self.dropped_no_interest),
            dropped_slow_consumer: read(&self.dropped_slow_consumer),
            dropped_rejected: read(&self.dropped_rejected),
            publish_refused: read(&self.publish_refused),
            bytes_in: read(&self.bytes_in),
            bytes_out: read(&self.bytes_out),
            connections_accepted: read(&self.connections_accepted),
            connections_refused: read(&self.connections_refused),
            connections_closed: CloseReason::LABELS
                .iter()
                .zip(&self.connections_closed)
                .map(|(label, counter)| (*label, read(counter)))
                .collect(),
        }
    }
}
