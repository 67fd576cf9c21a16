//! Broker-wide counters and the latency histogram, registered once in a Prometheus
//! registry ([`prometheus_client`]).
//!
//! Every labelled series is created at startup and kept as a handle, so the hot paths
//! never look up a label: counting is one relaxed atomic add, and the sessions and
//! writers add once per batch rather than once per message where they can. Gauges that
//! describe current state (connections, subscriptions, queue depths) are read from the
//! broker when `/metrics` is scraped; see `admin/metrics.rs`.

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tern_proto::{DeliveryMode, ErrorCode};

use crate::close_reason::CloseReason;

/// Label pairs of one series.
type Labels = Vec<(&'static str, &'static str)>;

/// Upper bounds (seconds) of the publish-to-delivery latency buckets: 10 µs to 10 s
/// in 1-2.5-5 steps.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Monotonic counters and the latency histogram, shared by every connection.
#[derive(Debug)]
pub struct Stats {
    registry: Registry,
    /// Messages accepted from publishers.
    pub published: Counter,
    /// Broadcast deliveries written to subscribers.
    pub delivered_broadcast: Counter,
    /// Queue deliveries written to consumers (redeliveries included).
    pub delivered_queue: Counter,
    /// Queue deliveries that were redeliveries.
    pub redelivered: Counter,
    /// Broadcast publishes that matched nobody.
    pub dropped_no_interest: Counter,
    /// Broadcast messages dropped because a subscriber's buffer was full.
    pub dropped_slow_consumer: Counter,
    /// Queue messages discarded by NACK without requeue.
    pub dropped_rejected: Counter,
    /// Ready queue messages removed by QUEUE_PURGE.
    pub dropped_purged: Counter,
    /// Queue messages deleted with their queue (QUEUE_DELETE).
    pub dropped_deleted: Counter,
    /// Queues deleted by QUEUE_DELETE.
    pub queues_deleted: Counter,
    /// HTTP connections closed at `HTTP_MAX_CONNECTIONS` to make room for a new one.
    pub http_evicted: Counter,
    /// HTTP requests that did not complete within `HTTP_REQUEST_TIMEOUT_MS`.
    pub http_timed_out: Counter,
    /// Queues deleted because they stayed empty with no consumer (`QUEUE_EXPIRE_SECS`).
    pub queues_expired: Counter,
    /// Publishes refused, by [`ErrorCode::ALL`] position.
    publish_errors: Vec<Counter>,
    /// Frame bytes read from clients.
    pub bytes_in: Counter,
    /// Frame bytes written to clients.
    pub bytes_out: Counter,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections refused at the connection limit.
    pub connections_refused: Counter,
    /// Connections closed, by [`CloseReason::index`].
    connections_closed: Vec<Counter>,
    /// Publish-to-delivery latency, by [`DeliveryMode::index`].
    latency: [Histogram; 2],
}

/// A point-in-time copy of the counters, for `/healthz`.
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

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Creates every series and registers it under the `tern_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tern");

        let published = counter(
            &mut registry,
            "messages_published",
            "Messages accepted from publishers",
        );

        let delivered = Family::<Labels, Counter>::default();
        registry.register(
            "messages_delivered",
            "Deliveries written to clients, by delivery mode (queue includes redeliveries)",
            delivered.clone(),
        );
        let [delivered_broadcast, delivered_queue] = DeliveryMode::ALL
            .map(|mode| delivered.get_or_create_owned(&vec![("mode", mode.as_str())]));

        let redelivered = counter(
            &mut registry,
            "messages_redelivered",
            "Queue deliveries of messages delivered before (nacked, or their consumer left)",
        );

        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "messages_dropped",
            "Messages the broker did not deliver, by mode and reason: no_interest (broadcast \
             publish nobody subscribed to), slow_consumer (a subscriber's buffer was full), \
             rejected (a consumer nacked without requeue), purged (QUEUE_PURGE), deleted \
             (deleted with their queue)",
            dropped.clone(),
        );
        let dropped_no_interest =
            dropped.get_or_create_owned(&vec![("mode", "broadcast"), ("reason", "no_interest")]);
        let dropped_slow_consumer =
            dropped.get_or_create_owned(&vec![("mode", "broadcast"), ("reason", "slow_consumer")]);
        let dropped_rejected =
            dropped.get_or_create_owned(&vec![("mode", "queue"), ("reason", "rejected")]);
        let dropped_purged =
            dropped.get_or_create_owned(&vec![("mode", "queue"), ("reason", "purged")]);
        let dropped_deleted =
            dropped.get_or_create_owned(&vec![("mode", "queue"), ("reason", "deleted")]);

        let removed = Family::<Labels, Counter>::default();
        registry.register(
            "queues_removed",
            "Queues removed, by reason: deleted (QUEUE_DELETE) or expired (empty with no \
             consumer for QUEUE_EXPIRE_SECS)",
            removed.clone(),
        );
        let queues_deleted = removed.get_or_create_owned(&vec![("reason", "deleted")]);
        let queues_expired = removed.get_or_create_owned(&vec![("reason", "expired")]);

        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "publish_errors",
            "Publishes refused, by wire error code",
            errors.clone(),
        );
        let publish_errors = ErrorCode::ALL
            .iter()
            .map(|code| errors.get_or_create_owned(&vec![("code", code.name())]))
            .collect();

        let bytes_in = counter(
            &mut registry,
            "received_bytes",
            "Frame bytes read from clients",
        );
        let bytes_out = counter(
            &mut registry,
            "sent_bytes",
            "Frame bytes written to clients",
        );

        let connections_accepted = counter(
            &mut registry,
            "connections_accepted",
            "Connections accepted since start",
        );
        let connections_refused = counter(
            &mut registry,
            "connections_refused",
            "Connections refused because MAX_CONNECTIONS was reached",
        );
        let closed = Family::<Labels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections closed, by reason",
            closed.clone(),
        );
        let http_evicted = counter(
            &mut registry,
            "http_connections_evicted",
            "HTTP connections closed at HTTP_MAX_CONNECTIONS to make room for a new one (the oldest open)",
        );
        let http_timed_out = counter(
            &mut registry,
            "http_requests_timed_out",
            "HTTP connections closed because their request did not complete within HTTP_REQUEST_TIMEOUT_MS",
        );
        let connections_closed = CloseReason::LABELS
            .iter()
            .map(|reason| closed.get_or_create_owned(&vec![("reason", *reason)]))
            .collect();

        let latency_family = Family::<Labels, Histogram, _>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "delivery_latency_seconds",
            "Time from a publish being read to its delivery being written, by mode (sampled: \
             the first publish of each read batch; queue latency includes time waiting in \
             the queue)",
            latency_family.clone(),
        );
        let latency = DeliveryMode::ALL
            .map(|mode| latency_family.get_or_create_owned(&vec![("mode", mode.as_str())]));

        Stats {
            registry,
            published,
            delivered_broadcast,
            delivered_queue,
            redelivered,
            dropped_no_interest,
            dropped_slow_consumer,
            dropped_rejected,
            dropped_purged,
            dropped_deleted,
            queues_deleted,
            queues_expired,
            http_evicted,
            http_timed_out,
            publish_errors,
            bytes_in,
            bytes_out,
            connections_accepted,
            connections_refused,
            connections_closed,
            latency,
        }
    }

    /// The registry holding every series above, for the exporter.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds `amount` to a counter: one relaxed atomic add, skipped for zero.
    pub fn add(counter: &Counter, amount: u64) {
        if amount != 0 {
            counter.inc_by(amount);
        }
    }

    /// Counts a closed connection under its reason.
    pub fn count_close(&self, reason: CloseReason) {
        Stats::add(&self.connections_closed[reason.index()], 1);
    }

    /// Counts a refused publish under its error code.
    pub fn count_publish_error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|known| *known == code) {
            Stats::add(&self.publish_errors[index], 1);
        }
    }

    /// Records one publish-to-delivery latency sample.
    pub fn observe_latency(&self, mode: DeliveryMode, seconds: f64) {
        self.latency[mode.index()].observe(seconds);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.get(),
            delivered_broadcast: self.delivered_broadcast.get(),
            delivered_queue: self.delivered_queue.get(),
            redelivered: self.redelivered.get(),
            dropped_no_interest: self.dropped_no_interest.get(),
            dropped_slow_consumer: self.dropped_slow_consumer.get(),
            dropped_rejected: self.dropped_rejected.get(),
            publish_refused: self.publish_errors.iter().map(Counter::get).sum(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
            connections_closed: CloseReason::LABELS
                .iter()
                .zip(&self.connections_closed)
                .map(|(label, counter)| (*label, counter.get()))
                .collect(),
        }
    }
}

/// Registers a plain counter and returns its handle.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_publish_errors_over_codes() {
        let stats = Stats::new();
        stats.count_publish_error(ErrorCode::QueueFull);
        stats.count_publish_error(ErrorCode::NoResponders);
        assert_eq!(stats.snapshot().publish_refused, 2);
    }
}
