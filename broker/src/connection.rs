//! What the broker knows about one client connection: who it is (address, HELLO's
//! name and role), since when, what it sent, and whether an operator closed it. Held
//! inside the connection's outbox (one allocation per connection); listed by the
//! registry (`connections.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use tern_proto::Role;

use crate::response_permits::ResponsePermits;

/// What the client said about itself in HELLO.
#[derive(Debug, Clone)]
struct ClientInfo {
    name: Box<str>,
    role: Role,
}

/// One open connection as the registry sees it.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    peer: SocketAddr,
    connected_at: SystemTime,
    client: OnceLock<ClientInfo>,
    received_bytes: AtomicU64,
    received_messages: AtomicU64,
    subscriptions: AtomicUsize,
    /// An operator asked to close it (the close reason then says so).
    closed_by_admin: AtomicBool,
    /// The `AUTH_FILE` user it authenticated as.
    user: OnceLock<Box<str>>,
    /// Reply subjects it may answer once (`allow_responses`); made at the
    /// handshake for users that have it.
    responses: OnceLock<Box<ResponsePermits>>,
    /// Whether requests delivered to it grant a response permit (the user's
    /// `allow_responses`, kept current on reload).
    answers_requests: AtomicBool,
}

impl Connection {
    /// Connection `id`, from `peer`, accepted now.
    pub fn new(id: u64, peer: SocketAddr) -> Connection {
        Connection {
            id,
            peer,
            connected_at: SystemTime::now(),
            client: OnceLock::new(),
            received_bytes: AtomicU64::new(0),
            received_messages: AtomicU64::new(0),
            subscriptions: AtomicUsize::new(0),
            closed_by_admin: AtomicBool::new(false),
            user: OnceLock::new(),
            responses: OnceLock::new(),
            answers_requests: AtomicBool::new(false),
        }
    }

    /// The connection id (WELCOME's `connection_id`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records the client's name and role after the handshake. The name is copied:
    /// holding the HELLO frame's slice would pin the read buffer.
    pub fn identify(&self, name: &str, role: Role) {
        let _ = self.client.set(ClientInfo {
            name: name.into(),
            role,
        });
    }

    /// Records the user it authenticated as, and whether it may answer the
    /// requests delivered to it.
    pub fn authenticate(&self, user: &str, allow_responses: bool) {
        let _ = self.user.set(user.into());
        self.set_answers_requests(allow_responses);
    }

    /// The user it authenticated as (`AUTH_FILE`).
    pub fn user(&self) -> Option<&str> {
        self.user.get().map(|user| &**user)
    }

    /// Turns `allow_responses` on or off (a reload changed the user).
    pub fn set_answers_requests(&self, allow: bool) {
        if allow {
            self.responses.get_or_init(Box::default);
        }
        self.answers_requests.store(allow, Ordering::Release);
    }

    /// A request with reply-to `reply_to` is being delivered to it: with
    /// `allow_responses`, it may publish one answer there.
    #[inline]
    pub fn delivering_request(&self, reply_to: &str) {
        if self.answers_requests.load(Ordering::Relaxed) {
            if let Some(responses) = self.responses.get() {
                responses.grant(reply_to);
            }
        }
    }

    /// Takes the permit to answer at `subject`, if a request delivered to it
    /// asked for an answer there (and `allow_responses` is on).
    pub fn take_response_permit(&self, subject: &str) -> bool {
        self.answers_requests.load(Ordering::Acquire)
            && self
                .responses
                .get()
                .is_some_and(|responses| responses.take(subject))
    }

    /// Counts bytes read from the client.
    pub fn count_received_bytes(&self, bytes: u64) {
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts messages the client published.
    pub fn count_received_messages(&self, messages: u64) {
        if messages != 0 {
            self.received_messages
                .fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// Sets the number of active subscriptions.
    pub fn set_subscriptions(&self, count: usize) {
        self.subscriptions.store(count, Ordering::Relaxed);
    }

    /// Records that an operator closes it (see [`crate::connections::ConnectionRegistry::close`]).
    pub fn mark_closed_by_admin(&self) {
        self.closed_by_admin.store(true, Ordering::Release);
    }

    /// Whether an operator closed it.
    pub fn closed_by_admin(&self) -> bool {
        self.closed_by_admin.load(Ordering::Acquire)
    }
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// HELLO's client name and role, once the handshake is done.
    pub fn client(&self) -> Option<(&str, &'static str)> {
        self.client
            .get()
            .map(|client| (&*client.name, role_name(client.role)))
    }

    /// Bytes read from the client and messages it published.
    pub fn received(&self) -> (u64, u64) {
        (
            self.received_bytes.load(Ordering::Relaxed),
            self.received_messages.load(Ordering::Relaxed),
        )
    }

    /// Active subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// When it connected (milliseconds since the Unix epoch) and for how long.
    pub fn connected(&self) -> (u64, u64) {
        let millis =
            |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let at = self
            .connected_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, millis);
        let age = SystemTime::now()
            .duration_since(self.connected_at)
            .map_or(0, millis);
        (at, age)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Producer => "producer",
        Role::Consumer => "consumer",
        Role::Both => "both",
    }
}
