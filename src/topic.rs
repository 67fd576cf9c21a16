//! Broadcast fan-out: one published message to every matching subscription.

use std::sync::Arc;

use crate::outbox::{MissedCounter, Outbox};
use crate::stats::Stamp;
use tern_proto::Message;

/// A broadcast subscription as the router sees it: where to push, under which id.
#[derive(Debug, Clone)]
pub struct BroadcastTarget {
    /// The subscription id on its connection.
    pub sid: u32,
    /// The connection's outbox.
    pub outbox: Arc<Outbox>,
    /// Messages dropped for this subscription since its last LAGGED report.
    pub missed: MissedCounter,
}

impl BroadcastTarget {
    /// Whether this target is subscription `sid` of connection `connection_id`.
    pub fn is(&self, connection_id: u64, sid: u32) -> bool {
        self.sid == sid && self.outbox.connection_id() == connection_id
    }
}

/// Pushes `message` to every target. The payload is shared, not copied: each target
/// costs one reference-count increment. A full target drops its copy (counted and
/// reported by its outbox); the others are unaffected. Returns how many accepted it.
/// `stamp` marks a latency sample (0: not sampled).
pub fn fan_out(targets: &[BroadcastTarget], message: &Arc<Message>, stamp: Stamp) -> usize {
    targets
        .iter()
        .filter(|target| {
            target
                .outbox
                .push_broadcast(target.sid, &target.missed, message.clone(), stamp)
        })
        .count()
}
