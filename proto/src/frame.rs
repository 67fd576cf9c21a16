//! Every frame of the Tern protocol, as plain data.
//!
//! String fields are [`ByteString`]s and messages are [`Message`]s: decoding slices them
//! out of the received frame without copying, and cloning them only bumps a refcount.

use bytestring::ByteString;

use crate::error_code::ErrorCode;
use crate::message::Message;
use crate::opcode::Opcode;

/// What a connection may do, declared in HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// May publish, may not subscribe.
    Producer = 1,
    /// May subscribe, may not publish.
    Consumer = 2,
    /// May publish and subscribe.
    Both = 3,
}

impl Role {
    /// Whether this role may send PUBLISH.
    pub fn can_publish(self) -> bool {
        matches!(self, Role::Producer | Role::Both)
    }

    /// Whether this role may send SUBSCRIBE.
    pub fn can_subscribe(self) -> bool {
        matches!(self, Role::Consumer | Role::Both)
    }
}

impl TryFrom<u8> for Role {
    type Error = u8;

    fn try_from(byte: u8) -> Result<Self, u8> {
        match byte {
            1 => Ok(Role::Producer),
            2 => Ok(Role::Consumer),
            3 => Ok(Role::Both),
            other => Err(other),
        }
    }
}

/// How a subscription receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum DeliveryMode {
    /// Every matching subscription gets a copy.
    #[default]
    Broadcast = 1,
    /// Subscriptions on the same queue compete; each message goes to exactly one.
    Queue = 2,
}

impl TryFrom<u8> for DeliveryMode {
    type Error = u8;

    fn try_from(byte: u8) -> Result<Self, u8> {
        match byte {
            1 => Ok(DeliveryMode::Broadcast),
            2 => Ok(DeliveryMode::Queue),
            other => Err(other),
        }
    }
}

impl std::str::FromStr for DeliveryMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "broadcast" => Ok(DeliveryMode::Broadcast),
            "queue" => Ok(DeliveryMode::Queue),
            _ => Err(format!("expected `broadcast` or `queue`, got `{text}`")),
        }
    }
}

impl DeliveryMode {
    /// Both modes, in wire-value order.
    pub const ALL: [DeliveryMode; 2] = [DeliveryMode::Broadcast, DeliveryMode::Queue];

    /// The mode's name, as `DELIVERY_MODE` spells it: `broadcast` or `queue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Broadcast => "broadcast",
            DeliveryMode::Queue => "queue",
        }
    }

    /// Position in [`DeliveryMode::ALL`], for per-mode tables.
    pub const fn index(self) -> usize {
        self as usize - 1
    }
}

impl std::fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message header: a UTF-8 name and value. Names are case-sensitive; order and
/// duplicates are preserved end to end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header name.
    pub name: ByteString,
    /// Header value.
    pub value: ByteString,
}

impl Header {
    /// Builds a header from anything string-like.
    pub fn new(name: impl Into<ByteString>, value: impl Into<ByteString>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// HELLO: the client's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// What the connection may do.
    pub role: Role,
    /// Free-form client name, for logs.
    pub client_name: ByteString,
    /// Reserved for token authentication; servers without auth ignore it.
    pub auth_token: ByteString,
}

/// WELCOME: the server accepted the handshake and states its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the server will speak on this connection.
    pub version: u16,
    /// Server-assigned id of this connection (for logs on both sides).
    pub connection_id: u64,
    /// Largest length prefix the server accepts.
    pub max_frame_bytes: u32,
    /// Longest subject, pattern or queue name the server accepts, in bytes.
    pub max_subject_length: u16,
    /// Server-wide cap on concurrent subscriptions.
    pub max_subscriptions: u32,
    /// Prefetch used by a queue SUBSCRIBE that asks for 0.
    pub default_prefetch: u32,
    /// Server software name and version, for logs.
    pub server_name: ByteString,
}

/// PUBLISH: a message for a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Non-zero asks for a PUBLISH_OK / PUBLISH_ERROR carrying this number; 0 = fire and forget.
    pub sequence: u64,
    /// The message: a literal subject (no wildcards), reply-to for requests,
    /// headers and payload.
    pub message: Message,
}

/// SUBSCRIBE: start receiving messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Client-chosen id, unique among this connection's active subscriptions.
    pub sid: u32,
    /// Broadcast or queue; `None` uses the server's `DELIVERY_MODE`.
    pub mode: Option<DeliveryMode>,
    /// Queue mode: most unacked deliveries held at once; 0 = server default.
    pub prefetch: u32,
    /// Subject pattern (`*` and `>` allowed). May be empty for a queue that already exists
    /// or whose name is its subject.
    pub pattern: ByteString,
    /// Queue mode: the queue to join; `None` uses the pattern as the queue name.
    pub queue: Option<ByteString>,
}

/// DELIVER: a message for one of the client's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The subscription this delivery belongs to.
    pub sid: u32,
    /// Queue deliveries: the id to ACK/NACK. Broadcast deliveries: 0 (nothing to ack).
    pub delivery_id: u64,
    /// True when this message was delivered before and not acked.
    pub redelivered: bool,
    /// The message as published.
    pub message: Message,
}

/// PUBLISH_ERROR: a confirmed publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    /// The sequence of the refused PUBLISH.
    pub sequence: u64,
    /// Why (a wire value; see [`ErrorCode`]).
    pub code: u16,
    /// Human-readable detail.
    pub message: ByteString,
}

/// ERROR: a request failed, or the connection is about to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Why (a wire value; see [`ErrorCode`]).
    pub code: u16,
    /// The subscription id or delivery id the error is about; 0 when none.
    pub context: u64,
    /// Human-readable detail.
    pub message: ByteString,
}

impl ErrorFrame {
    /// Builds an ERROR frame from a known code.
    pub fn new(code: ErrorCode, context: u64, message: impl Into<ByteString>) -> Self {
        ErrorFrame {
            code: code.as_u16(),
            context,
            message: message.into(),
        }
    }
}

/// GOODBYE: the server is closing this connection on purpose (usually shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Why (a wire value; see [`ErrorCode`]).
    pub code: u16,
    /// Human-readable detail.
    pub message: ByteString,
}

/// SUBSCRIBE_FILTERED (protocol version 2): a SUBSCRIBE whose subscription gets
/// only the messages whose headers match `filter` (see [`crate::filter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFiltered {
    /// Every field of SUBSCRIBE, with the same meaning.
    pub subscribe: Subscribe,
    /// The filter's text; empty matches every message.
    pub filter: ByteString,
}

/// QUEUE_INFO: one queue, answering QUEUE_LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The `request_id` of the QUEUE_LIST this answers.
    pub request_id: u64,
    /// The queue's name.
    pub name: ByteString,
    /// The pattern it is bound to.
    pub pattern: ByteString,
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// Payload bytes held (ready and unacked).
    pub bytes: u64,
}

/// Any frame, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Client handshake.
    Hello(Hello),
    /// Publish a message.
    Publish(Publish),
    /// Start a subscription.
    Subscribe(Subscribe),
    /// Start a subscription with a header filter (protocol version 2).
    SubscribeFiltered(SubscribeFiltered),
    /// End a subscription.
    Unsubscribe {
        /// The subscription to end.
        sid: u32,
    },
    /// Settle a queue delivery as done.
    Ack {
        /// The delivery to settle.
        delivery_id: u64,
    },
    /// Reject a queue delivery.
    Nack {
        /// The delivery to reject.
        delivery_id: u64,
        /// true: put it back at the front of the queue; false: discard it.
        requeue: bool,
    },
    /// Set a queue subscription's window (max unacked deliveries); 0 pauses it.
    Credit {
        /// The queue subscription.
        sid: u32,
        /// The new window.
        prefetch: u32,
    },
    /// List every queue: one QUEUE_INFO per queue, then QUEUE_OK.
    QueueList {
        /// Echoed in the answers (and as the `context` of an ERROR).
        request_id: u64,
    },
    /// Remove every ready message of a queue (unacked deliveries are kept).
    QueuePurge {
        /// Echoed in the answer (and as the `context` of an ERROR).
        request_id: u64,
        /// The queue.
        queue: ByteString,
    },
    /// Delete a queue with everything it holds.
    QueueDelete {
        /// Echoed in the answer (and as the `context` of an ERROR).
        request_id: u64,
        /// The queue.
        queue: ByteString,
        /// Delete it even while consumers are attached (they get QUEUE_DELETED).
        force: bool,
    },
    /// Liveness probe.
    Ping,
    /// Answer to PING.
    Pong,
    /// Handshake accepted.
    Welcome(Welcome),
    /// A message for a subscription.
    Deliver(Deliver),
    /// A confirmed publish was accepted.
    PublishOk {
        /// The sequence of the accepted PUBLISH.
        sequence: u64,
    },
    /// A confirmed publish was refused.
    PublishError(PublishError),
    /// A subscription is active.
    SubscribeOk {
        /// The subscription now active.
        sid: u32,
    },
    /// The server dropped messages for a subscription because its buffer was full.
    Lagged {
        /// The subscription that missed messages.
        sid: u32,
        /// How many messages were dropped since the previous LAGGED for it.
        missed: u64,
    },
    /// A failure report.
    Error(ErrorFrame),
    /// The server is closing the connection.
    Goodbye(Goodbye),
    /// One queue, answering QUEUE_LIST.
    QueueInfo(QueueInfo),
    /// A queue administration request succeeded.
    QueueOk {
        /// The request answered.
        request_id: u64,
        /// QUEUE_LIST: queues listed; QUEUE_PURGE: messages removed; QUEUE_DELETE:
        /// messages deleted with the queue (ready and unacked).
        count: u64,
    },
}

impl Frame {
    /// The opcode this frame is sent with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Frame::Hello(_) => Opcode::Hello,
            Frame::Publish(_) => Opcode::Publish,
            Frame::Subscribe(_) => Opcode::Subscribe,
            Frame::SubscribeFiltered(_) => Opcode::SubscribeFiltered,
            Frame::Unsubscribe { .. } => Opcode::Unsubscribe,
            Frame::Ack { .. } => Opcode::Ack,
            Frame::Nack { .. } => Opcode::Nack,
            Frame::Credit { .. } => Opcode::Credit,
            Frame::Ping => Opcode::Ping,
            Frame::Pong => Opcode::Pong,
            Frame::Welcome(_) => Opcode::Welcome,
            Frame::Deliver(_) => Opcode::Deliver,
            Frame::PublishOk { .. } => Opcode::PublishOk,
            Frame::PublishError(_) => Opcode::PublishError,
            Frame::SubscribeOk { .. } => Opcode::SubscribeOk,
            Frame::Lagged { .. } => Opcode::Lagged,
            Frame::Error(_) => Opcode::Error,
            Frame::Goodbye(_) => Opcode::Goodbye,
            Frame::QueueList { .. } => Opcode::QueueList,
            Frame::QueuePurge { .. } => Opcode::QueuePurge,
            Frame::QueueDelete { .. } => Opcode::QueueDelete,
            Frame::QueueInfo(_) => Opcode::QueueInfo,
            Frame::QueueOk { .. } => Opcode::QueueOk,
        }
    }

    /// Shorthand for an ERROR frame.
    pub fn error(code: ErrorCode, context: u64, message: impl Into<ByteString>) -> Frame {
        Frame::Error(ErrorFrame::new(code, context, message))
    }
}
