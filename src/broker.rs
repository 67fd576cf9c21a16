//! The state every connection shares: the subscription index, the queues, limits,
//! counters and the lifecycle flags (ready, shutting down).
//!
//! Lock order, where two are held: queue registry → subject index. Neither is held
//! across an `.await`. The publish path takes no lock in the steady state: sessions
//! cache routing results per subject and revalidate them with one atomic load of
//! [`Broker::routing_generation`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tern_proto::{DeliveryMode, ErrorCode};

use crate::config::Config;
use crate::queue::{Queue, QueueError, QueueLimits, QueueRegistry, RegistryError};
use crate::stats::{stamp_from_micros, Stamp, Stats};
use crate::subject::SubjectIndex;
use crate::topic::{fan_out, BroadcastTarget, Touched};
use tern_proto::Message;

/// Something a subject can route to.
#[derive(Debug, Clone)]
pub enum Route {
    /// A broadcast subscription.
    Subscriber(BroadcastTarget),
    /// A queue (bound once, whatever its number of consumers).
    Queue(Arc<Queue>),
}

/// Everything one subject routes to, split by delivery path.
#[derive(Debug, Default)]
pub struct Routes {
    /// Broadcast subscriptions: each gets a copy.
    pub subscribers: Vec<BroadcastTarget>,
    /// Queues: each stores the message for one of its consumers.
    pub queues: Vec<Arc<Queue>>,
}

impl Routes {
    /// True when nothing matches.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.queues.is_empty()
    }
}

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
    index: RwLock<SubjectIndex<Route>>,
    generation: AtomicU64,
    queues: QueueRegistry,
    stats: Arc<Stats>,
    subscriptions: AtomicUsize,
    subscriptions_by_mode: [AtomicUsize; 2],
    connections: AtomicUsize,
    next_connection_id: AtomicU64,
    shutting_down: Arc<AtomicBool>,
    ready: AtomicBool,
    started: Instant,
}

impl Broker {
    /// A broker with no connections, subscriptions or queues.
    pub fn new(config: Config) -> Self {
        let shutting_down = Arc::new(AtomicBool::new(false));
        let limits = QueueLimits {
            max_messages: config.queue_max_messages,
            max_bytes: config.queue_max_bytes,
        };
        Broker {
            queues: QueueRegistry::new(config.max_queues, limits, shutting_down.clone()),
            config,
            index: RwLock::new(SubjectIndex::new()),
            generation: AtomicU64::new(1),
            stats: Arc::new(Stats::new()),
            subscriptions: AtomicUsize::new(0),
            subscriptions_by_mode: [AtomicUsize::new(0), AtomicUsize::new(0)],
            connections: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
            shutting_down,
            ready: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// When the broker was created.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Changes whenever the subject index changes; route caches compare it.
    pub fn routing_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Computes what `subject` routes to (takes the index's read lock).
    pub fn routes_for(&self, subject: &str) -> Routes {
        let mut routes = Routes::default();
        let index = self
            .index
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        index.for_each_match(subject, |route| match route {
            Route::Subscriber(target) => routes.subscribers.push(target.clone()),
            Route::Queue(queue) => routes.queues.push(queue.clone()),
        });
        routes
    }

    fn modify_index(&self, change: impl FnOnce(&mut SubjectIndex<Route>)) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        change(&mut index);
        // Bumped under the write lock: a cache that sees the old value cannot have
        // read the new index state under it.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes a broadcast subscription routable.
    pub fn add_subscriber(&self, pattern: &str, target: BroadcastTarget) {
        self.modify_index(|index| index.insert(pattern, Route::Subscriber(target)));
    }

    /// Removes a broadcast subscription from routing.
    pub fn remove_subscriber(&self, pattern: &str, connection_id: u64, sid: u32) {
        self.modify_index(|index| {
            index.remove(
                pattern,
                |route| matches!(route, Route::Subscriber(target) if target.is(connection_id, sid)),
            );
        });
    }

    /// Finds or creates queue `name` bound to `pattern`.
    pub fn bind_queue(&self, name: &str, pattern: &str) -> Result<Arc<Queue>, Refusal> {
        self.queues
            .bind(name, pattern, |queue| {
                self.modify_index(|index| index.insert(pattern, Route::Queue(queue.clone())));
                tracing::info!(queue = name, pattern, "queue created");
            })
            .map(|(queue, _created)| queue)
            .map_err(|error| match error {
                RegistryError::PatternMismatch { .. } => {
                    Refusal::new(ErrorCode::QueuePatternMismatch, error.to_string())
                }
                RegistryError::TooManyQueues { .. } => {
                    Refusal::new(ErrorCode::TooManyQueues, error.to_string())
                }
            })
    }

    /// The queue named `name`, if it exists.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.get(name)
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.all()
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
                    format!("subscription limit of {max} (MAX_CONSUMERS) reached"),
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
        let max = self.config.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .ok()?;
        Stats::add(&self.stats.connections_accepted, 1);
        Some(self.next_connection_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Gives a connection slot back.
    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Marks the broker as accepting connections (readiness).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_shutting_down()
    }

    /// Starts the shutdown: not ready, no new work, queues stop dispatching.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A [`Stamp`] for now: publishes carry one (sampled) so the delivery latency
    /// can be measured when it is written.
    pub fn stamp_now(&self) -> Stamp {
        stamp_from_micros(self.started.elapsed().as_micros())
    }

    /// Routes one validated message. Broadcast subscribers each get it encoded into
    /// their connection's buffer; each matching queue stores it (shared). `is_request` (a reply-to is set)
    /// turns "nobody can receive this" into `NO_RESPONDERS`. `stamp` is when it was
    /// read, or 0 when this message is not a latency sample. Subscribers whose
    /// buffers are over half full, and whose writers must be woken, are added to
    /// `touched` (see [`crate::outbox`]).
    pub fn publish(
        &self,
        routes: &Routes,
        message: &Message,
        is_request: bool,
        stamp: Stamp,
        touched: &mut Touched,
    ) -> Result<(), Refusal> {
        if is_request
            && routes.subscribers.is_empty()
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
                    .publish(Arc::new(message.clone()), stamp)
                    .map_err(queue_refusal);
            }
            Stats::add(&self.stats.dropped_no_interest, 1);
            return Ok(());
        }
        fan_out(&routes.subscribers, message, stamp, touched);
        if routes.queues.is_empty() {
            return Ok(());
        }
        // Queues keep the message until it is acked: share one copy (a reference
        // into the read buffer, so this copies no payload).
        let message = Arc::new(message.clone());
        let mut refusal = Ok(());
        for queue in &routes.queues {
            if let Err(error) = queue.publish(message.clone(), stamp) {
                refusal = Err(queue_refusal(error));
            }
        }
        refusal
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

fn queue_refusal(error: QueueError) -> Refusal {
    match error {
        QueueError::Full { .. } => Refusal::new(ErrorCode::QueueFull, error.to_string()),
        other => Refusal::new(ErrorCode::Internal, other.to_string()),
    }
}
