//! The probe reports: liveness (`/healthz`) and readiness (`/ready`), as plain
//! functions over the broker's state.

use serde::Serialize;

use crate::broker::Broker;
use crate::stats::StatsSnapshot;
use crate::store::StoreHealth;

/// Body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` when the store reports a problem; answering at all is
    /// the liveness signal.
    pub status: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Open connections.
    pub connections: usize,
    /// Active subscriptions.
    pub subscriptions: usize,
    /// Queues that exist (per-queue depths are not computed here: a liveness probe
    /// must stay cheap however many queues there are).
    pub queues: usize,
    /// Counters.
    pub stats: StatsSnapshot,
    /// The store behind durable queues (absent with `STORE_URL=mem://`): queues
    /// it could not load at startup, and queues whose writes are failing now. Any
    /// of them turns `status` to `degraded` (still HTTP 200: restarting would not
    /// help, and the other queues are served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreHealth>,
}

/// Body of `GET /ready`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Whether the broker accepts connections.
    pub ready: bool,
    /// `ready`, `starting` or `shutting_down`.
    pub status: &'static str,
}

/// The liveness report.
pub fn health(broker: &Broker) -> Health {
    let store = broker.store().map(|store| store.health());
    let degraded = store
        .as_ref()
        .is_some_and(|store| !store.failed_to_load.is_empty() || !store.failing_writes.is_empty());
    Health {
        status: if degraded { "degraded" } else { "ok" },
        store,
        uptime_seconds: broker.started().elapsed().as_secs(),
        connections: broker.connection_count(),
        subscriptions: broker.subscription_count(),
        queues: broker.queue_count(),
        stats: broker.stats().snapshot(),
    }
}

/// The readiness report.
pub fn readiness(broker: &Broker) -> ReadinessReport {
    let status = if broker.is_shutting_down() {
        "shutting_down"
    } else if broker.is_ready() {
        "ready"
    } else {
        "starting"
    };
    ReadinessReport {
        ready: status == "ready",
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn readiness_follows_the_lifecycle() {
        let broker = Broker::new(Config::default());
        assert_eq!(
            readiness(&broker),
            ReadinessReport {
                ready: false,
                status: "starting"
            }
        );
        drop(broker.take_startup_hold());
        assert_eq!(
            readiness(&broker),
            ReadinessReport {
                ready: true,
                status: "ready"
            }
        );
        broker.begin_shutdown();
        assert_eq!(
            readiness(&broker),
            ReadinessReport {
                ready: false,
                status: "shutting_down"
            }
        );
        assert_eq!(health(&broker).status, "ok");
    }
}
