//! `GET /metrics`: the Prometheus exposition (OpenMetrics text format).
//!
//! Two parts: the counters and histogram of [`Stats`](crate::stats::Stats), updated by
//! the hot paths as traffic flows, and gauges read from the broker's current state at
//! scrape time (connections, subscriptions by mode, per-queue depth). Reading state
//! at scrape time costs the message path nothing; a scrape takes each queue's lock
//! once, briefly.

use std::fmt;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tern_proto::DeliveryMode;

use crate::broker::Broker;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Renders every metric of `broker`.
pub fn render(broker: &Broker) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    encode_registry(&mut text, broker.stats().registry())?;
    encode_registry(&mut text, &current_state(broker))?;
    encode_registry(&mut text, broker.security().stats().registry())?;
    if let Some(store) = broker.store() {
        encode_registry(&mut text, store.stats().registry())?;
    }
    encode_eof(&mut text)?;
    Ok(text)
}

/// Gauges describing the broker right now, in a registry built for this scrape.
fn current_state(broker: &Broker) -> Registry {
    let mut registry = Registry::with_prefix("tern");

    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    registry.register("build", "Tern version (the value is always 1)", info);

    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(broker.started().elapsed().as_secs()).unwrap_or(i64::MAX));
    registry.register("uptime_seconds", "Seconds since the broker started", uptime);

    let ready = Gauge::<i64>::default();
    ready.set(i64::from(broker.is_ready()));
    registry.register(
        "ready",
        "1 while the broker accepts traffic (/ready answers 200), else 0",
        ready,
    );

    let connections = Gauge::<i64>::default();
    connections.set(count(broker.connection_count()));
    registry.register("connections", "Open client connections", connections);

    let subscriptions = Family::<Labels, Gauge>::default();
    for mode in DeliveryMode::ALL {
        subscriptions
            .get_or_create(&vec![("mode", mode.as_str().to_string())])
            .set(count(broker.subscription_count_by_mode(mode)));
    }
    registry.register(
        "subscriptions",
        "Active subscriptions, by delivery mode",
        subscriptions,
    );

    let queues = broker.queues();
    let queue_count = Gauge::<i64>::default();
    queue_count.set(count(queues.len()));
    registry.register("queues", "Queues that exist", queue_count);

    let ready_messages = Family::<Labels, Gauge>::default();
    let unacked = Family::<Labels, Gauge>::default();
    let consumers = Family::<Labels, Gauge>::default();
    let refused = Family::<Labels, Counter>::default();
    let disk_bytes = Family::<Labels, Gauge>::default();
    let disk_segments = Family::<Labels, Gauge>::default();
    for queue in &queues {
        let depth = queue.depth();
        let labels = vec![("queue", queue.name().to_string())];
        ready_messages
            .get_or_create(&labels)
            .set(count(depth.ready));
        unacked.get_or_create(&labels).set(count(depth.unacked));
        consumers.get_or_create(&labels).set(count(depth.consumers));
        if let Some((bytes, segments)) = queue.disk_usage() {
            disk_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            disk_segments
                .get_or_create(&labels)
                .set(i64::try_from(segments).unwrap_or(i64::MAX));
        }
        for (reason, value) in [
            ("full", queue.refused_full()),
            ("memory_limit", queue.refused_memory()),
            ("storage_failed", queue.refused_storage()),
        ] {
            refused
                .get_or_create(&vec![
                    ("queue", queue.name().to_string()),
                    ("reason", reason.to_string()),
                ])
                .inc_by(value);
        }
    }
    registry.register(
        "queue_publish_refused",
        "Publishes a queue refused since it was created, by reason: full (QUEUE_MAX_MESSAGES \
         or QUEUE_MAX_BYTES), memory_limit (MEMORY_LIMIT) or storage_failed (its disk write failed)",
        refused,
    );
    if broker.store().is_some() {
        registry.register(
            "queue_disk_bytes",
            "Bytes of a durable queue's segment files on disk",
            disk_bytes,
        );
        registry.register(
            "queue_disk_segments",
            "Segment files of a durable queue on disk",
            disk_segments,
        );
    }

    let memory = broker.memory();
    let used = Gauge::<i64>::default();
    used.set(i64::try_from(memory.used()).unwrap_or(i64::MAX));
    registry.register(
        "memory_queued_bytes",
        "Bytes of queued messages counted against MEMORY_LIMIT (encoded size plus bookkeeping)",
        used,
    );
    let limit = Gauge::<i64>::default();
    limit.set(i64::try_from(memory.limit()).unwrap_or(i64::MAX));
    registry.register(
        "memory_limit_bytes",
        "MEMORY_LIMIT resolved to bytes (0: no limit)",
        limit,
    );
    let refusing = Gauge::<i64>::default();
    refusing.set(i64::from(memory.is_refusing()));
    registry.register(
        "memory_limit_reached",
        "1 while publishes that would be queued are refused with MEMORY_LIMIT, else 0",
        refusing,
    );
    registry.register(
        "queue_depth",
        "Messages waiting in a queue for a consumer",
        ready_messages,
    );
    registry.register(
        "queue_unacked",
        "Messages delivered from a queue and not yet acked",
        unacked,
    );
    registry.register(
        "queue_consumers",
        "Consumers attached to a queue",
        consumers,
    );
    registry
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_exposition_names_every_family_and_ends_with_eof() {
        let broker = Broker::new(Config::default());
        let text = render(&broker).expect("render");
        for family in [
            "tern_messages_published_total",
            "tern_messages_delivered_total{mode=\"broadcast\"}",
            "tern_messages_dropped_total{mode=\"broadcast\",reason=\"slow_consumer\"}",
            "tern_publish_errors_total{code=\"QUEUE_FULL\"}",
            "tern_received_bytes_total",
            "tern_sent_bytes_total",
            "tern_connections_closed_total{reason=\"client_closed\"}",
            "tern_delivery_latency_seconds_bucket{le=\"0.001\",mode=\"queue\"}",
            "tern_connections 0",
            "tern_subscriptions{mode=\"queue\"} 0",
            "tern_queues 0",
            "tern_ready 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
