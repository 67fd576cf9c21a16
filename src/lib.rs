//! Tern: a message broker with a documented binary protocol.
//!
//! Modules, from the socket inwards:
//! - [`server`] — binds listeners, accepts connections, runs the shutdown sequence.
//! - [`session`] — one client's connection: handshake, frames in, answers out.
//! - [`connection`] — reading frames from a socket.
//! - [`outbox`] — a connection's bounded outbound buffer and its batching writer.
//! - [`broker`] — state shared by all connections; publish routing.
//! - [`subject`] — the subscription index (token trie with wildcards).
//! - [`topic`] — broadcast fan-out.
//! - [`queue`] — named FIFO queues, competing consumers, acks; storage behind a trait.
//! - [`stats`] — counters and the latency histogram (Prometheus registry).
//! - [`metrics`] — the `/metrics` exposition.
//! - [`http`] — `/healthz`, `/ready` and `/metrics`.
//! - [`config`] — settings from defaults, environment and flags.
//! - [`shutdown`] — signals to cancellation.
//! - [`cli`] — the `tern` command line (serve, pub, sub, req, reply).

pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod queue;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod subject;
pub mod topic;

pub use config::Config;
pub use server::{Server, ServerError};
