//! SUBSCRIBE and UNSUBSCRIBE: validating a subscription, attaching it to routing (a
//! broadcast subscription) or to a queue (a consumer), and detaching it again, on
//! UNSUBSCRIBE or when the connection ends.

use std::sync::Arc;

use bytestring::ByteString;
use tern_proto::subject::{validate_pattern, validate_subject};
use tern_proto::{
    DeliveryMode, ErrorCode, Filter, Frame, Subscribe, SubscribeFiltered, FILTERS_VERSION,
};

use super::handlers::subject_refusal;
use super::Session;
use crate::broker::Refusal;
use crate::config::{env, MAX_PREFETCH};
use crate::outbound::MissedCounter;
use crate::queue::Queue;
use crate::routing::BroadcastTarget;

/// How often a queue SUBSCRIBE binds before it gives up on a queue that keeps being
/// deleted under it.
const BIND_ATTEMPTS: usize = 3;

/// An active subscription of this connection.
#[derive(Debug)]
pub(super) enum Subscription {
    /// Routed by its pattern (in its pattern's filtered group when it has a filter);
    /// its LAGGED gaps are watched by the outbox.
    Broadcast { pattern: ByteString, filtered: bool },
    /// A consumer of a queue.
    Queue { queue: Arc<Queue> },
}

impl Session {
    /// SUBSCRIBE_FILTERED: SUBSCRIBE with a header filter (protocol version 2).
    pub(super) fn on_subscribe_filtered(&mut self, filtered: &SubscribeFiltered) {
        let sid = filtered.subscribe.sid;
        if self.version < FILTERS_VERSION {
            return self.send_error(
                ErrorCode::UnknownOpcode,
                0,
                format!("SUBSCRIBE_FILTERED needs protocol version {FILTERS_VERSION}; this connection speaks {}", self.version),
            );
        }
        match Filter::parse(&filtered.filter) {
            Ok(filter) if filter.is_empty() => self.on_subscribe(&filtered.subscribe, None),
            Ok(filter) => self.on_subscribe(&filtered.subscribe, Some(Arc::new(filter))),
            Err(error) => {
                self.send_error(ErrorCode::InvalidFilter, u64::from(sid), error.to_string())
            }
        }
    }

    pub(super) fn on_subscribe(&mut self, subscribe: &Subscribe, filter: Option<Arc<Filter>>) {
        let sid = subscribe.sid;
        if let Err(refusal) = self.subscribe(subscribe, filter) {
            self.send_error(refusal.code, u64::from(sid), refusal.message);
        }
        self.outbox
            .connection()
            .set_subscriptions(self.subscriptions.len());
    }

    fn subscribe(
        &mut self,
        subscribe: &Subscribe,
        filter: Option<Arc<Filter>>,
    ) -> Result<(), Refusal> {
        let Subscribe {
            sid,
            mode,
            prefetch,
            ref pattern,
            ref queue,
        } = *subscribe;
        // These outlive the frame: give them their own allocation rather than keep the
        // connection's whole read buffer alive for as long as the subscription lasts.
        let pattern = ByteString::from(&**pattern);
        let queue = queue.as_ref().map(|name| ByteString::from(&**name));
        self.require_role(self.role.can_subscribe(), "subscribe")?;
        self.refuse_new_work_while_draining()?;
        if self.subscriptions.contains_key(&sid) {
            return Err(Refusal::new(
                ErrorCode::DuplicateSubscription,
                format!("subscription id {sid} is already active"),
            ));
        }
        let per_connection = self.broker.config().max_subscriptions_per_connection;
        if self.subscriptions.len() >= per_connection {
            return Err(Refusal::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "subscription limit of {per_connection} per connection ({}) reached",
                    env::MAX_SUBSCRIPTIONS_PER_CONNECTION
                ),
            ));
        }
        // Naming a queue asks for queue delivery; only an explicit broadcast mode
        // contradicts it.
        let mode = match (mode, &queue) {
            (Some(DeliveryMode::Broadcast), Some(_)) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "a broadcast subscription cannot name a queue; use mode queue (2)",
                ))
            }
            (None, Some(_)) => DeliveryMode::Queue,
            (mode, _) => mode.unwrap_or(self.broker.config().delivery_mode),
        };
        match mode {
            // Prefetch is ignored for broadcast (PROTOCOL.md §4.4), whatever its value.
            DeliveryMode::Broadcast => self.subscribe_broadcast(sid, pattern, filter),
            DeliveryMode::Queue => self.subscribe_queue(sid, pattern, queue, prefetch, filter),
        }
    }

    fn subscribe_broadcast(
        &mut self,
        sid: u32,
        pattern: ByteString,
        filter: Option<Arc<Filter>>,
    ) -> Result<(), Refusal> {
        validate_pattern(&pattern).map_err(subject_refusal)?;
        self.check_subscribe(&pattern)?;
        self.broker.reserve_subscription(DeliveryMode::Broadcast)?;
        // SUBSCRIBE_OK goes out before anything can be delivered for it.
        self.outbox.push_control(Frame::SubscribeOk { sid });
        let missed = MissedCounter::default();
        self.outbox.watch_lag(sid, missed.clone());
        let target = BroadcastTarget {
            sid,
            outbox: self.outbox.clone(),
            missed,
        };
        let filtered = filter.is_some();
        match filter {
            Some(filter) => self
                .broker
                .add_filtered_subscriber(&pattern, target, filter),
            None => self.broker.add_subscriber(&pattern, target),
        }
        self.subscriptions
            .insert(sid, Subscription::Broadcast { pattern, filtered });
        Ok(())
    }

    fn subscribe_queue(
        &mut self,
        sid: u32,
        pattern: ByteString,
        queue: Option<ByteString>,
        prefetch: u32,
        filter: Option<Arc<Filter>>,
    ) -> Result<(), Refusal> {
        if prefetch > MAX_PREFETCH {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("prefetch {prefetch} is above the maximum of {MAX_PREFETCH}"),
            ));
        }
        // Without a queue name the pattern names the queue, so it must be a plain
        // subject: a wildcard or empty pattern is INVALID_QUEUE_NAME.
        let name = queue.unwrap_or_else(|| pattern.clone());
        validate_subject(&name).map_err(|error| {
            Refusal::new(ErrorCode::InvalidQueueName, format!("queue name: {error}"))
        })?;
        self.check_consume(&name)?;
        let existing = self.broker.queue(&name);
        let binding = if pattern.is_empty() {
            existing
                .as_ref()
                .map_or_else(|| name.clone(), |existing| existing.pattern().clone())
        } else {
            validate_pattern(&pattern).map_err(subject_refusal)?;
            pattern
        };
        if existing.is_none() && binding != name {
            // Creating the queue binds it: a pattern other than its own name must
            // be one the user may subscribe to (consume rights on the name cover
            // the name itself).
            self.check_subscribe(&binding)?;
        }
        drop(existing);
        self.broker.reserve_subscription(DeliveryMode::Queue)?;
        let prefetch = if prefetch == 0 {
            self.broker.config().default_prefetch
        } else {
            prefetch
        };
        // A queue found here may be deleted (expired, or by an operator) before the
        // consumer is attached: bind again, which creates it anew.
        let mut attempts = 0;
        let queue = loop {
            attempts += 1;
            let queue = match self.broker.bind_queue(&name, &binding) {
                Ok(queue) => queue,
                Err(refusal) => {
                    self.broker.release_subscription(DeliveryMode::Queue);
                    return Err(refusal);
                }
            };
            // SUBSCRIBE_OK goes out before anything is delivered for it.
            let outbox = &self.outbox;
            match queue.add_consumer(
                self.id,
                sid,
                outbox.clone(),
                prefetch,
                filter.clone(),
                || outbox.push_control(Frame::SubscribeOk { sid }),
            ) {
                Ok(()) => break queue,
                Err(_) if attempts < BIND_ATTEMPTS => continue,
                Err(error) => {
                    self.broker.release_subscription(DeliveryMode::Queue);
                    return Err(Refusal::new(ErrorCode::QueueDeleted, error.to_string()));
                }
            }
        };
        self.subscriptions
            .insert(sid, Subscription::Queue { queue });
        Ok(())
    }

    pub(super) fn on_unsubscribe(&mut self, sid: u32) {
        if let Err(refusal) = self.require_role(self.role.can_subscribe(), "unsubscribe") {
            return self.send_error(refusal.code, u64::from(sid), refusal.message);
        }
        match self.subscriptions.remove(&sid) {
            Some(subscription) => self.detach(sid, subscription),
            None => self.send_error(
                ErrorCode::UnknownSubscription,
                u64::from(sid),
                format!("no active subscription with id {sid}"),
            ),
        }
        self.outbox
            .connection()
            .set_subscriptions(self.subscriptions.len());
    }

    /// Removes a subscription from routing or from its queue (whose unacked
    /// deliveries to it go back to the front) and frees its slot.
    pub(super) fn detach(&self, sid: u32, subscription: Subscription) {
        let mode = match subscription {
            Subscription::Broadcast { pattern, filtered } => {
                if filtered {
                    self.broker
                        .remove_filtered_subscriber(&pattern, self.id, sid);
                } else {
                    self.broker.remove_subscriber(&pattern, self.id, sid);
                }
                self.outbox.unwatch_lag(sid);
                DeliveryMode::Broadcast
            }
            Subscription::Queue { queue } => {
                queue.remove_consumer(self.id, sid);
                DeliveryMode::Queue
            }
        };
        self.broker.release_subscription(mode);
    }

    /// Detaches every subscription: the connection is ending.
    pub(super) fn detach_all(&mut self) {
        for (sid, subscription) in std::mem::take(&mut self.subscriptions) {
            self.detach(sid, subscription);
        }
        self.outbox.connection().set_subscriptions(0);
    }
}
