//! The state every connection shares: routing, the queues, the connection
//! registry, limits, counters and readiness; and the publish path that ties them.
//!
//! Lock order, where two are held: queue registry → subject index (when a new queue
//! becomes routable). Neither is held across an `.await`. The publish path takes no
//! lock in the steady state: sessions cache routing results per subject and
//! revalidate them with one atomic load of [`Broker::routing_generation`]. The full
//! lock order is in `docs/ARCHITECTURE.md`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use smallvec::SmallVec;
use tern_proto::{DeliveryMode, ErrorCode, Message};

use crate::clock::{self, Instant, Stamp};
use crate::config::{env, Config};
use crate::connections::ConnectionRegistry;
use crate::memory::MemoryBudget;
use crate::queue::{Queue, QueueError, QueueLimits, QueueRegistry, RegistryError};
use crate::readiness::{Readiness, ReadinessHold};
use crate::routing::{fan_out, BroadcastTarget, Router, Routes, Touched};
use crate::security::Security;
use crate::stats::Stats;
use crate::store::{FileStore, PendingConfirm, Store, StoreError, StoreUrl};
use tern_proto::Frame;

/// A refused request, with the code the client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Wire error code.
    pub code: ErrorCode,
    /// Detail for the client.
    pub message: String,
}

impl Refusal {
    /// A refusal with a code and detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Shared broker state.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    router: Router,
    queues: QueueRegistry,
    /// The charge of every queued message against `MEMORY_LIMIT`.
    memory: Arc<MemoryBudget>,
    connections: ConnectionRegistry,
    stats: Arc<Stats>,
    subscriptions: AtomicUsize,
    subscriptions_by_mode: [AtomicUsize; 2],
    /// Shared with the queues: they stop dispatching once it is set.
    shutting_down: Arc<AtomicBool>,
    readiness: Arc<Readiness>,
    /// The broker's own start-up hold, released by [`crate::Server::run`].
    startup: Mutex<Option<ReadinessHold>>,
    /// Where durable queues live (`None`: `STORE_URL=mem://`).
    store: Option<Arc<dyn Store>>,
    /// TLS, authentication and permissions (open without `AUTH_FILE`).
    security: Security,
    started: Instant,
}

impl Broker {
    /// A broker with no connections, subscriptions or queues. Not ready until its
    /// start-up hold ([`Broker::take_startup_hold`]) and every other hold on its
    /// [`Readiness`] are released.
    pub fn new(config: Config) -> Self {
        Broker::build(config, None)
    }

    /// A broker on the store `STORE_URL` names, with the queues it holds recovered
    /// (`mem://`: the same as [`Broker::new`]).
    pub fn open(config: Config) -> Result<Self, StoreError> {
        let store: Arc<dyn Store> = match &config.store_url {
            StoreUrl::Memory => return Ok(Broker::new(config)),
            StoreUrl::File(dir) => Arc::new(FileStore::open(
                dir,
                config.store_fsync,
                config.store_segment_bytes,
            )?),
        };
        Broker::with_store(config, store)
    }

    /// A broker on `store`, with the queues it holds recovered and routable.
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let broker = Broker::build(config, Some(store.clone()));
        let recovery = store.recover()?;
        let messages: usize = recovery
            .queues
            .iter()
            .map(|queue| queue.messages.len())
            .sum();
        let queues = broker.queues.restore(recovery.queues, !recovery.clean);
        for queue in &queues {
            broker.router.add_queue(queue.pattern(), queue.clone());
        }
        tracing::info!(
            store = %store.describe(),
            queues = queues.len(),
            messages,
            not_loaded = recovery.failed.len(),
            clean_stop = recovery.clean,
            millis = recovery.took.as_millis() as u64,
            "queues recovered"
        );
        Ok(broker)
    }

    fn build(config: Config, store: Option<Arc<dyn Store>>) -> Self {
        let shutting_down = Arc::new(AtomicBool::new(false));
        let limits = QueueLimits {
            max_messages: config.queue_max_messages,
            max_bytes: config.queue_max_bytes,
        };
        let (readiness, startup) = Readiness::new();
        let (memory_limit, derived) = config.memory_limit.resolve();
        tracing::info!(bytes = memory_limit, from = %derived, "memory limit for queued messages");
        let memory = Arc::new(MemoryBudget::new(memory_limit));
        Broker {
            queues: QueueRegistry::new(
                config.max_queues,
                limits,
                shutting_down.clone(),
                memory.clone(),
                store.clone(),
            ),
            memory,
            connections: ConnectionRegistry::new(config.max_connections),
            config,
            router: Router::default(),
            stats: Arc::new(Stats::new()),
            subscriptions: AtomicUsize::new(0),
            subscriptions_by_mode: [AtomicUsize::new(0), AtomicUsize::new(0)],
            shutting_down,
            readiness,
            startup: Mutex::new(Some(startup)),
            started: clock::now(),
            store,
            security: Security::open(),
        }
    }

    /// The same broker with `security` (TLS, `AUTH_FILE`) in force.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// TLS, authentication and permissions.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Reloads the security files when they change, until `stop` (see
    /// [`Security::watch_files`]).
    pub async fn watch_security_files(&self, stop: tokio_util::sync::CancellationToken) {
        self.security
            .watch_files(stop, || self.router.invalidate())
            .await;
    }

    /// Reloads the security files (SIGHUP, or a file changed); permissions cached
    /// by sessions are dropped with every route cache.
    pub fn reload_security(&self) {
        self.security.reload(|| self.router.invalidate());
    }

    /// The store behind durable queues, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Writes and syncs everything the store holds and stops its writer (the last
    /// step of a shutdown, once every connection is closed).
    pub fn close_store(&self) {
        if let Some(store) = &self.store {
            store.close();
            tracing::info!(store = %store.describe(), "store closed cleanly");
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Queued messages' charge against `MEMORY_LIMIT`.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// When the broker was created.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Every open connection.
    pub fn connections(&self) -> &ConnectionRegistry {
        &self.connections
    }

    /// The readiness latch: start-up steps hold it.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Takes the broker's own start-up hold (once; `None` afterwards). Dropping it
    /// makes the broker ready when nothing else holds readiness.
    pub fn take_startup_hold(&self) -> Option<ReadinessHold> {
        self.startup
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }

    /// Changes whenever the subject index changes; route caches compare it.
    pub fn routing_generation(&self) -> u64 {
        self.router.generation()
    }

    /// Computes what `subject` routes to (takes the index's read lock).
    pub fn routes_for(&self, subject: &str) -> Routes {
        self.router.routes_for(subject)
    }

    /// Makes a broadcast subscription routable.
    pub fn add_subscriber(&self, pattern: &str, target: BroadcastTarget) {
        self.router.add_subscriber(pattern, target);
    }

    /// Removes a broadcast subscription from routing.
    pub fn remove_subscriber(&self, pattern: &str, connection_id: u64, sid: u32) {
        self.router.remove_subscriber(pattern, connection_id, sid);
    }

    /// Makes a broadcast subscription with a header filter routable.
    pub fn add_filtered_subscriber(
        &self,
        pattern: &str,
        target: BroadcastTarget,
        filter: Arc<tern_proto::Filter>,
    ) {
        self.router.add_filtered_subscriber(pattern, target, filter);
    }

    /// Removes a filtered broadcast subscription from routing.
    pub fn remove_filtered_subscriber(&self, pattern: &str, connection_id: u64, sid: u32) {
        self.router
            .remove_filtered_subscriber(pattern, connection_id, sid);
    }

    /// Finds or creates queue `name` bound to `pattern`.
    pub fn bind_queue(&self, name: &str, pattern: &str) -> Result<Arc<Queue>, Refusal> {
        self.queues
            .bind(name, pattern, |queue| {
                self.router.add_queue(pattern, queue.clone());
                tracing::info!(queue = name, pattern, "queue created");
            })
            .map(|(queue, _created)| queue)
            .map_err(registry_refusal)
    }

    /// Deletes queue `name` with what it holds (`force`: even with consumers
    /// attached; each is sent `ERROR QUEUE_DELETED` for its subscription). Returns
    /// how many messages went with it.
    pub fn delete_queue(&self, name: &str, force: bool) -> Result<u64, Refusal> {
        let closed = self
            .queues
            .delete(name, force, |queue| self.router.remove_queue(queue))
            .map_err(registry_refusal)?;
        for (outbox, sid) in &closed.consumers {
            outbox.push_control(Frame::error(
                ErrorCode::QueueDeleted,
                u64::from(*sid),
                format!("queue `{name}` was deleted; subscription {sid} has ended"),
            ));
        }
        let messages = closed.messages as u64;
        Stats::add(&self.stats.queues_deleted, 1);
        Stats::add(&self.stats.dropped_deleted, messages);
        tracing::info!(
            queue = name,
            messages,
            consumers = closed.consumers.len(),
            "queue deleted"
        );
        Ok(messages)
    }

    /// Removes every ready message of queue `name`; returns how many.
    pub fn purge_queue(&self, name: &str) -> Result<u64, Refusal> {
        let queue = self
            .queue(name)
            .ok_or_else(|| registry_refusal(RegistryError::UnknownQueue(name.into())))?;
        let removed = queue.purge() as u64;
        Stats::add(&self.stats.dropped_purged, removed);
        tracing::info!(queue = name, messages = removed, "queue purged");
        Ok(removed)
    }

    /// Deletes the queues that have been empty with no consumer for
    /// `QUEUE_EXPIRE_SECS` (never when it is 0). Returns how many.
    pub fn expire_idle_queues(&self) -> usize {
        let after = self.config.queue_expire;
        if after.is_zero() {
            return 0;
        }
        let expired = self
            .queues
            .expire(clock::now(), after, |queue| self.router.remove_queue(queue));
        for queue in &expired {
            tracing::info!(
                queue = %queue.name(),
                idle_secs = after.as_secs(),
                "queue expired: empty with no consumer"
            );
        }
        Stats::add(&self.stats.queues_expired, expired.len() as u64);
        expired.len()
    }

    /// Background upkeep until `stop`, once a second: deletes expired queues, and
    /// copies out messages waiting as views of read buffers that nobody publishes
    /// after any more (see [`crate::queue::COPY_OUT_AFTER`]).
    pub async fn run_housekeeping(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    self.expire_idle_queues();
                    for queue in self.queues.all() {
                        queue.copy_out_waiting();
                    }
                }
            }
        }
    }

    /// The queue named `name`, if it exists.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.get(name)
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.all()
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Takes one of the `MAX_CONSUMERS` subscription slots for a subscription of
    /// `mode`.
    pub fn reserve_subscription(&self, mode: DeliveryMode) -> Result<(), Refusal> {
        let max = self.config.max_consumers;
        self.subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .map(|_| {
                self.subscriptions_by_mode[mode.index()].fetch_add(1, Ordering::AcqRel);
            })
            .map_err(|_| {
                Refusal::new(
                    ErrorCode::TooManySubscriptions,
                    format!(
                        "subscription limit of {max} ({}) reached",
                        env::MAX_CONSUMERS
                    ),
                )
            })
    }

    /// Gives a subscription slot of `mode` back.
    pub fn release_subscription(&self, mode: DeliveryMode) {
        self.subscriptions_by_mode[mode.index()].fetch_sub(1, Ordering::AcqRel);
        self.subscriptions.fetch_sub(1, Ordering::AcqRel);
    }

    /// Active subscriptions of one delivery mode.
    pub fn subscription_count_by_mode(&self, mode: DeliveryMode) -> usize {
        self.subscriptions_by_mode[mode.index()].load(Ordering::Acquire)
    }

    /// Active subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Acquire)
    }

    /// Takes a connection slot and an id, or `None` at `MAX_CONNECTIONS`.
    pub fn open_connection(&self) -> Option<u64> {
        let id = self.connections.open()?;
        Stats::add(&self.stats.connections_accepted, 1);
        Some(id)
    }

    /// Gives connection `id`'s slot back and forgets it.
    pub fn close_connection(&self, id: u64) {
        self.connections.close_slot(id);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Starts the shutdown: not ready, no new work, queues stop dispatching.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.readiness.begin_shutdown();
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A [`Stamp`] for now: publishes carry one (sampled) so the delivery latency
    /// can be measured when it is written.
    pub fn stamp_now(&self) -> Stamp {
        clock::stamp_since(self.started)
    }

    /// Routes one validated message. Broadcast subscribers each get it encoded into
    /// their connection's buffer; each matching queue stores it (shared). `is_request` (a reply-to is set)
    /// turns "nobody can receive this" into `NO_RESPONDERS`. `stamp` is when it was
    /// read, or 0 when this message is not a latency sample. Subscribers whose
    /// buffers are over half full, and whose writers must be woken, are added to
    /// `touched` (see [`crate::outbound`]). `confirm`, for a confirmed publish on a
    /// broker with a store, is held by every durable queue that stores the message
    /// until it is on disk.
    pub fn publish(
        &self,
        routes: &Routes,
        message: &Message,
        is_request: bool,
        stamp: Stamp,
        touched: &mut Touched,
        confirm: Option<&Arc<PendingConfirm>>,
    ) -> Result<(), Refusal> {
        // Filtered subscriptions whose filter matches this message's headers (only
        // subjects that have some pay for the lookup and the list).
        let mut filtered: SmallVec<[BroadcastTarget; 4]> = SmallVec::new();
        for group in &routes.filtered {
            group.matching(message, &mut filtered);
        }
        if is_request
            && routes.subscribers.is_empty()
            && filtered.is_empty()
            && !routes.queues.iter().any(|queue| queue.has_consumers())
        {
            return Err(Refusal::new(
                ErrorCode::NoResponders,
                format!(
                    "no subscriber can answer a request on `{}`",
                    message.subject()
                ),
            ));
        }
        if routes.is_empty() {
            if self.config.delivery_mode == DeliveryMode::Queue {
                // The original single-switch behaviour: a subject nobody listens to gets
                // a queue that holds its messages until a consumer comes.
                let subject = message.subject();
                let queue = self.bind_queue(subject, subject)?;
                return queue
                    .publish(message.clone(), stamp, confirm)
                    .map_err(queue_refusal);
            }
            Stats::add(&self.stats.dropped_no_interest, 1);
            return Ok(());
        }
        fan_out(&routes.subscribers, message, stamp, touched);
        fan_out(&filtered, message, stamp, touched);
        if routes.queues.is_empty() {
            if routes.subscribers.is_empty() && filtered.is_empty() {
                Stats::add(&self.stats.dropped_no_interest, 1);
            }
            return Ok(());
        }
        // Queues keep the message until it is acked: each holds a view of it (a
        // reference into the read buffer, so this copies no payload; a queue
        // where it waits copies it out).
        if touched.defer_queues && confirm.is_none() {
            // Fire and forget: stored when the read batch ends, one lock per queue
            // per batch; refusals are reported then (`flush_queue_batch`).
            for queue in &routes.queues {
                touched
                    .deferred()
                    .queued
                    .push(queue, (message.clone(), stamp));
            }
            return Ok(());
        }
        let mut refusal = Ok(());
        let mut deleted = false;
        for queue in &routes.queues {
            match queue.publish(message.clone(), stamp, confirm) {
                Ok(()) => {}
                Err(QueueError::Deleted(_)) => deleted = true,
                Err(error) => refusal = Err(queue_refusal(error)),
            }
        }
        if deleted {
            let reached_subscribers = !routes.subscribers.is_empty();
            if let Err(again) =
                self.republish(message, stamp, confirm, &routes.queues, reached_subscribers)
            {
                refusal = Err(again);
            }
        }
        refusal
    }
}

impl Broker {
    /// Stores a read batch's fire-and-forget queue publishes (see
    /// [`crate::routing::QueueBatch`]): one lock per queue. A queue deleted since the
    /// batch's routes were cached is routed around as in [`Broker::publish`].
    /// Returns the refusals, in order, for the publisher.
    pub fn flush_queue_batch(&self, touched: &mut Touched) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        let mut refused = Vec::new();
        let Some(deferred) = touched.deferred.as_mut() else {
            return refusals;
        };
        let entries = std::mem::take(&mut deferred.queued.entries);
        // A queue's binding never changes: any queue of this batch that matches a
        // message's subject now matched it then, and holds it already.
        let reached: Vec<Arc<Queue>> = entries.iter().map(|(queue, _)| queue.clone()).collect();
        for (queue, messages) in entries {
            if queue.publish_many(messages, &mut refused) {
                deferred.backlogged.push(queue.clone());
            }
            for (error, returned) in refused.drain(..) {
                let outcome = match (error, returned) {
                    (QueueError::Deleted(_), Some((message, stamp))) => {
                        self.republish(&message, stamp, None, &reached, false)
                    }
                    (other, _) => Err(queue_refusal(other)),
                };
                if let Err(refusal) = outcome {
                    refusals.push(refusal);
                }
            }
        }
        refusals
    }

    /// A message a queue deleted after its routes were cached refused: the routes
    /// of now decide. It goes to each matching queue not in `reached` (a queue
    /// created since gets it); when nothing matches now and it `reached_subscribers`
    /// none, it is as any publish that matches nothing (in queue mode, one creates
    /// a queue).
    fn republish(
        &self,
        message: &Message,
        stamp: Stamp,
        confirm: Option<&Arc<PendingConfirm>>,
        reached: &[Arc<Queue>],
        reached_subscribers: bool,
    ) -> Result<(), Refusal> {
        let current = self.routes_for(message.subject());
        if current.is_empty() && !reached_subscribers {
            if self.config.delivery_mode == DeliveryMode::Queue {
                let subject = message.subject();
                return self
                    .bind_queue(subject, subject)?
                    .publish(message.clone(), stamp, confirm)
                    .map_err(queue_refusal);
            }
            Stats::add(&self.stats.dropped_no_interest, 1);
        }
        let mut outcome = Ok(());
        for queue in &current.queues {
            if reached.iter().any(|old| Arc::ptr_eq(old, queue)) {
                continue;
            }
            match queue.publish(message.clone(), stamp, confirm) {
                Ok(()) | Err(QueueError::Deleted(_)) => {}
                Err(error) => outcome = Err(queue_refusal(error)),
            }
        }
        outcome
    }
}

/// How often [`Broker::run_housekeeping`] looks for expired queues.
pub const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn queue_refusal(error: QueueError) -> Refusal {
    match error {
        QueueError::MemoryLimit { .. } => Refusal::new(ErrorCode::MemoryLimit, error.to_string()),
        QueueError::Store(_) => Refusal::new(ErrorCode::StorageFailed, error.to_string()),
        QueueError::Full { .. } => Refusal::new(
            ErrorCode::QueueFull,
            format!("{error}; that queue did not store it (subscribers and other queues matching the subject did)"),
        ),
        other => Refusal::new(ErrorCode::Internal, other.to_string()),
    }
}

fn registry_refusal(error: RegistryError) -> Refusal {
    let code = match error {
        RegistryError::PatternMismatch { .. } => ErrorCode::QueuePatternMismatch,
        RegistryError::TooManyQueues { .. } => ErrorCode::TooManyQueues,
        RegistryError::UnknownQueue(_) => ErrorCode::UnknownQueue,
        RegistryError::InUse { .. } => ErrorCode::QueueInUse,
        RegistryError::Store { .. } => ErrorCode::StorageFailed,
    };
    Refusal::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fire-and-forget publish whose cached routes name a queue deleted since is
    /// stored once in every queue that still matches, batched or not.
    #[test]
    fn a_publish_to_a_queue_deleted_under_cached_routes_reaches_each_other_queue_once() {
        for batched in [false, true] {
            let broker = Broker::new(Config::default());
            let wide = broker.bind_queue("wide", "jobs.*").expect("bound");
            broker.bind_queue("narrow", "jobs.x").expect("bound");
            let stale = broker.routes_for("jobs.x");
            assert_eq!(stale.queues.len(), 2);
            broker.delete_queue("narrow", false).expect("deleted");
            let message = Message::new("jobs.x", "once").expect("valid");
            let mut touched = Touched {
                defer_queues: batched,
                ..Touched::default()
            };
            broker
                .publish(&stale, &message, false, 0, &mut touched, None)
                .expect("accepted");
            assert!(broker.flush_queue_batch(&mut touched).is_empty());
            assert_eq!(wide.depth().ready, 1, "batched: {batched}");
        }
    }
}
