//! `tern-client`: the Rust SDK for the Tern message broker.
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_client::Client;
//!
//! # async fn example() -> Result<(), tern_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9080").await?;
//!
//! // Broadcast: every subscriber gets every message.
//! let mut orders = client.subscribe("orders.*").await?;
//! client.publish("orders.eu", "order 1").await?;
//! let message = orders.next().await.expect("subscribed");
//!
//! // Queue: competing consumers, each message to one of them, acked.
//! let mut jobs = client.queue_subscribe("jobs", 16).await?;
//! client.publish_confirmed("jobs", "resize image 7").await?;
//! let job = jobs.next().await.expect("subscribed");
//! job.ack().await?;
//!
//! // Request/reply.
//! let reply = client.request("svc.echo", "hi", Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! ## Connection loss and reconnection
//!
//! When the connection drops, the client reconnects with exponential backoff and
//! jitter ([`ReconnectPolicy`]) and sends every active subscription again. While
//! disconnected:
//! - broadcast messages published by others are **missed** (the broker keeps none);
//! - queue messages the client held unacked are requeued by the broker and delivered
//!   again (maybe to another consumer); acking them afterwards fails with
//!   [`ClientError::StaleDelivery`];
//! - frames buffered but not yet written when the connection dropped are **lost**,
//!   and waiting confirmations, requests and flushes fail with
//!   [`ClientError::Disconnected`] (the message may or may not have arrived);
//! - `publish` calls made while disconnected are buffered (up to
//!   `max_pending_bytes`, then they wait) and sent after reconnecting.
//!
//! Modules: [`client`] (connection, publish, subscribe, request), [`subscription`]
//! (streams and deliveries), [`message`], [`options`], [`error`].

pub mod client;
pub mod error;
mod handoff;
pub mod message;
pub mod options;
pub mod subscription;
pub mod tls;

pub use client::{Client, QueueStatus, ServerInfo};
pub use error::ClientError;
pub use message::{Message, OutgoingMessage};
pub use options::{ClientOptions, ReconnectPolicy};
pub use subscription::{Delivery, QueueSubscription, Subscription};
pub use tern_proto::{ErrorCode, Header, Role};
pub use tls::TlsOptions;

/// The README's Rust example, compiled as a doctest so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeExamples;
