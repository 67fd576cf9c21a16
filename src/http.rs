//! HTTP endpoints for orchestrators: `GET /healthz` (liveness), `GET /ready`
//! (readiness) and `GET /metrics` (Prometheus). Handlers are thin wrappers over plain
//! functions ([`health`], [`readiness`], [`crate::metrics::render`]) so the logic is
//! testable without a socket.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
pub struct Readiness {
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
pub fn readiness(broker: &Broker) -> Readiness {
    let status = if broker.is_shutting_down() {
        "shutting_down"
    } else if broker.is_ready() {
        "ready"
    } else {
        "starting"
    };
    Readiness {
        ready: status == "ready",
        status,
    }
}

/// The HTTP routes: `/healthz`, `/ready`, `/metrics`.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(broker)
}

async fn healthz(State(broker): State<Arc<Broker>>) -> Json<Health> {
    Json(health(&broker))
}

async fn ready(State(broker): State<Arc<Broker>>) -> (StatusCode, Json<Readiness>) {
    let report = readiness(&broker);
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    match crate::metrics::render(&broker) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics",
        )
            .into_response(),
    }
}

/// Serves the routes until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
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
            Readiness {
                ready: false,
                status: "starting"
            }
        );
        broker.set_ready(true);
        assert_eq!(
            readiness(&broker),
            Readiness {
                ready: true,
                status: "ready"
            }
        );
        broker.begin_shutdown();
        assert_eq!(
            readiness(&broker),
            Readiness {
                ready: false,
                status: "shutting_down"
            }
        );
        assert_eq!(health(&broker).status, "ok");
    }
}
