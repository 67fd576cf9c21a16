//! The shutdown sequence, in one place. When the shutdown token is cancelled:
//!
//! 1. the accept loop stops ([`super::Server::run`]);
//! 2. [`drain`]: readiness turns false and queues stop dispatching
//!    ([`crate::broker::Broker::begin_shutdown`]), the protocol listener closes (new
//!    connections are refused by the OS);
//! 3. every session, seeing the same token, sends GOODBYE, refuses new publishes
//!    and subscriptions, keeps answering PING, ACK and NACK, and closes as soon as
//!    it holds no unacked delivery (having answered every frame that has arrived),
//!    or when `SHUTDOWN_GRACE_SECS` has passed (`session/drain.rs`);
//! 4. [`drain`] waits for every session, up to the grace period plus
//!    [`SHUTDOWN_SLACK`] for their final flush;
//! 5. the HTTP listener stops last, so probes answer throughout.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;

/// Extra time, beyond the grace period, for sessions to finish their final flush.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(3);

/// Steps 2 and 4: stops new work, closes `listener` (if the sessions came from one),
/// waits for `sessions`.
pub async fn drain(broker: &Broker, sessions: &TaskTracker, listener: Option<TcpListener>) {
    broker.begin_shutdown();
    drop(listener);
    let grace = broker.config().shutdown_grace;
    info!(
        connections = broker.connection_count(),
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    sessions.close();
    if tokio::time::timeout(grace + SHUTDOWN_SLACK, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            connections = broker.connection_count(),
            "connections still open after the grace period"
        );
    }
}
