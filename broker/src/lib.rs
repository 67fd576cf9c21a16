//! Tern's broker, as a library: [`Server::bind`] a configuration, then
//! [`Server::run`] it until a cancellation token fires. The `tern` binary is a thin
//! command line over it; nothing here depends on the SDK, the CLI or the benchmark.
//!
//! Modules, from the socket inwards (the flows through them, the lock order and
//! where to look for each behaviour are in `docs/ARCHITECTURE.md`):
//! - [`server`] — listeners, the accept loop, the shutdown drain.
//! - [`readiness`] — the readiness latch behind `/ready`.
//! - [`transport`] — what a session runs over (TCP, any split stream); frame reading.
//! - [`session`] — one client: handshake, frame handlers, keepalive, route cache.
//! - [`outbound`] — a connection's outbox, batching writer, flow control, lag.
//! - [`connection`] — what is known about one client connection.
//! - [`connections`] — the registry of open connections (list, close).
//! - [`broker`] — state shared by all connections; the publish path.
//! - [`routing`] — the subject index and broadcast fan-out.
//! - [`queue`] — named queues: consumers, prefetch, acks; storage behind a trait.
//! - [`filter_index`] — which header filters match a message (a counting index).
//! - [`memory`] — the broker-wide bound on queued messages (`MEMORY_LIMIT`).
//! - [`admin`] — `/healthz`, `/ready`, `/metrics`.
//! - [`security`] — TLS, authentication, permissions; their reload.
//! - [`response_permits`] — `allow_responses`: one answer per delivered request.
//! - [`stats`] — counters and the latency histogram.
//! - [`config`] — every setting, declared once.
//! - [`close_reason`] — why a connection ended.
//! - [`clock`] — the one clock (tokio time: tests pause it).

pub mod admin;
pub mod broker;
pub mod clock;
pub mod close_reason;
pub mod config;
pub mod connection;
pub mod connections;
pub mod filter_index;
pub mod memory;
pub mod outbound;
pub mod queue;
pub mod readiness;
pub mod response_permits;
pub mod routing;
pub mod security;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod transport;

pub use config::Config;
pub use server::{Server, ServerError};
