//! Broadcast fan-out: one published message to every matching subscription.

use std::sync::Arc;

use crate::outbox::{MissedCounter, Outbox, Pushed};
use crate::stats::Stamp;
use tern_proto::MessageView;

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

/// Pushes `message` to every target: each encodes it into its connection's pending
/// buffer (large payloads are shared, not copied). A full target drops its copy (counted and
/// reported by its outbox); the others are unaffected. Targets whose buffer is over
/// half full are added to `pressure` (once each), so the publisher can let them
/// drain. `stamp` marks a latency sample (0: not sampled).
pub fn fan_out(
    targets: &[BroadcastTarget],
    message: MessageView<'_>,
    stamp: Stamp,
    pressure: &mut Vec<Arc<Outbox>>,
) {
    for target in targets {
        let pushed = target
            .outbox
            .push_broadcast(target.sid, &target.missed, message, stamp);
        if pushed == Pushed::QueuedUnderPressure
            && !pressure
                .iter()
                .any(|outbox| Arc::ptr_eq(outbox, &target.outbox))
        {
            pressure.push(target.outbox.clone());
        }
    }
}
