//! The probe reports: liveness (`/healthz`) and readiness (`/ready`), as plain
//! functions over the broker's state.

use serde::Serialize;

use crate::broker::Broker;
use crate::stats::StatsSnapshot;

/// Body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `ok`: answering at all is the liveness signal.
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
    Health {
        status: "ok",
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
