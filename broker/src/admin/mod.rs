//! HTTP endpoints for orchestrators and operators: `GET /healthz` (liveness),
//! `GET /ready` (readiness) and `GET /metrics` (Prometheus; with
//! `HTTP_AUTH_TOKEN_FILE` it requires `Authorization: Bearer <token>`). Handlers are thin
//! wrappers over plain functions ([`health::health`], [`health::readiness`],
//! [`metrics::render`]) so the logic is testable without a socket.
//!
//! - [`health`](mod@health) — the liveness and readiness reports;
//! - [`metrics`] — the Prometheus exposition;
//! - `http_server.rs` — the accept loop: one request per connection, within
//!   `HTTP_REQUEST_TIMEOUT_MS`, at most `HTTP_MAX_CONNECTIONS` open.

pub mod health;
mod http_server;
pub mod metrics;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
pub use health::{health, readiness, Health, ReadinessReport};

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

async fn ready(State(broker): State<Arc<Broker>>) -> (StatusCode, Json<ReadinessReport>) {
    let report = readiness(&broker);
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn metrics(State(broker): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    if let Some(token) = broker.security().http_token() {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        if !token.accepts(given) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (HTTP_AUTH_TOKEN_FILE)",
            )
                .into_response();
        }
    }
    match metrics::render(&broker) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics",
        )
            .into_response(),
    }
}

/// Serves the routes until `stop` is cancelled, within the HTTP limits (see
/// `http_server.rs`).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    http_server::serve(listener, broker.clone(), router(broker), stop).await
}
