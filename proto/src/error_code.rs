//! Stable numeric error codes carried by ERROR, PUBLISH_ERROR and GOODBYE frames.
//!
//! Codes are grouped by hundreds: 1–99 connection and framing, 100–199 invalid
//! arguments, 200–299 permissions, 300–399 subscriptions, 400–499 acknowledgements,
//! 500–599 publish refusals, 900+ server faults. A number that disappears is retired
//! and never reused, so clients can match on codes across versions.

use std::fmt;

/// A documented, stable error code. See `PROTOCOL.md` § Error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// HELLO asked for a protocol version the server does not speak. Closes.
    UnsupportedVersion = 1,
    /// A frame other than HELLO arrived before the handshake. Closes.
    HandshakeRequired = 2,
    /// No HELLO arrived within the handshake timeout. Closes.
    HandshakeTimeout = 3,
    /// A frame's body does not match its documented layout. Closes.
    MalformedFrame = 4,
    /// A length prefix exceeded the server's maximum frame size. Closes.
    FrameTooLarge = 5,
    /// The opcode byte is not one the server knows; the frame is skipped. Stays open.
    UnknownOpcode = 6,
    /// A known frame that is not valid here (server-only opcode, second HELLO). Stays open.
    UnexpectedFrame = 7,
    /// The server is at its connection limit. Closes.
    TooManyConnections = 8,
    /// The peer did not answer PINGs in time. Closes.
    StaleConnection = 9,
    /// The server is shutting down: new work is refused, acks are still accepted.
    ShuttingDown = 10,
    /// The broker requires authentication (`AUTH_FILE`) and HELLO's token (or the
    /// client certificate) names no user, or that user was removed or its
    /// credential changed since. Answered after a delay; closes.
    AuthenticationFailed = 11,
    /// The port serves TLS and the client spoke plaintext: sent in the clear, once,
    /// then closed.
    TlsRequired = 12,
    /// A subject, pattern or reply-to is empty, too long, has an empty token or a bad character. Stays open.
    InvalidSubject = 100,
    /// A publish subject (or reply-to) contains a wildcard token. Stays open.
    WildcardInSubject = 101,
    /// A queue name is empty, too long or contains a wildcard. Stays open.
    InvalidQueueName = 102,
    /// A field is out of range or contradicts another (a prefetch above the maximum, a
    /// broadcast subscription naming a queue). Stays open.
    InvalidArgument = 103,
    /// SUBSCRIBE_FILTERED's filter does not parse or is over a limit; the message
    /// gives the byte position. Stays open.
    InvalidFilter = 104,
    /// The connection's role or its user's permissions (`AUTH_FILE`) do not allow
    /// this (a PRODUCER subscribing, a publish outside the user's subjects); the
    /// message names the subject or queue. Stays open.
    PermissionDenied = 200,
    /// UNSUBSCRIBE or CREDIT named a subscription id that is not active. Stays open.
    UnknownSubscription = 300,
    /// SUBSCRIBE reused a subscription id that is still active on this connection. Stays open.
    DuplicateSubscription = 301,
    /// The server-wide subscription limit (`MAX_CONSUMERS`) is reached. Stays open.
    TooManySubscriptions = 302,
    /// The queue exists and is bound to a different pattern. Stays open.
    QueuePatternMismatch = 303,
    /// CREDIT named a broadcast subscription; only queue subscriptions have a window. Stays open.
    NotAQueueSubscription = 304,
    /// ACK/NACK named a delivery that is unknown, already settled, or from another connection. Stays open.
    UnknownDelivery = 400,
    /// The queue is at `QUEUE_MAX_MESSAGES` or `QUEUE_MAX_BYTES`; the message was not accepted.
    QueueFull = 500,
    /// A request (publish with reply-to) matched no subscriber that could answer it.
    NoResponders = 501,
    /// Creating another queue would exceed the server's queue limit.
    TooManyQueues = 502,
    /// QUEUE_PURGE or QUEUE_DELETE named a queue that does not exist. Stays open.
    UnknownQueue = 503,
    /// QUEUE_DELETE without `force` of a queue that has consumers attached. Stays open.
    QueueInUse = 504,
    /// Sent to each consumer of a queue that was deleted (`context` = its `sid`):
    /// the subscription has ended. Stays open.
    QueueDeleted = 505,
    /// The broker holds `MEMORY_LIMIT` bytes of queued messages: a publish that
    /// would store more is refused until it has drained below the low watermark.
    MemoryLimit = 506,
    /// A durable queue could not write the message to disk (a full or failing
    /// disk): the publish is refused, nothing already confirmed is affected, and
    /// the queue retries within a second. Stays open.
    StorageFailed = 507,
    /// An unexpected server fault. Closes.
    Internal = 900,
}

impl ErrorCode {
    /// Every code, in numeric order (for documentation and tests).
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::UnsupportedVersion,
        ErrorCode::HandshakeRequired,
        ErrorCode::HandshakeTimeout,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownOpcode,
        ErrorCode::UnexpectedFrame,
        ErrorCode::TooManyConnections,
        ErrorCode::StaleConnection,
        ErrorCode::ShuttingDown,
        ErrorCode::AuthenticationFailed,
        ErrorCode::TlsRequired,
        ErrorCode::InvalidSubject,
        ErrorCode::WildcardInSubject,
        ErrorCode::InvalidQueueName,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidFilter,
        ErrorCode::PermissionDenied,
        ErrorCode::UnknownSubscription,
        ErrorCode::DuplicateSubscription,
        ErrorCode::TooManySubscriptions,
        ErrorCode::QueuePatternMismatch,
        ErrorCode::NotAQueueSubscription,
        ErrorCode::UnknownDelivery,
        ErrorCode::QueueFull,
        ErrorCode::NoResponders,
        ErrorCode::TooManyQueues,
        ErrorCode::UnknownQueue,
        ErrorCode::QueueInUse,
        ErrorCode::QueueDeleted,
        ErrorCode::MemoryLimit,
        ErrorCode::StorageFailed,
        ErrorCode::Internal,
    ];

    /// The numeric value sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether the server closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedVersion
                | ErrorCode::HandshakeRequired
                | ErrorCode::HandshakeTimeout
                | ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::TooManyConnections
                | ErrorCode::StaleConnection
                | ErrorCode::AuthenticationFailed
                | ErrorCode::TlsRequired
                | ErrorCode::Internal
        )
    }

    /// Whether an ERROR with this code can be the answer to a SUBSCRIBE, in which
    /// case its `context` is that subscription's id (PROTOCOL.md §6). A client uses
    /// this to fail the subscription it was waiting to confirm. Every code says so
    /// here, without a catch-all arm: a new code cannot be added unclassified.
    pub fn can_refuse_subscribe(self) -> bool {
        match self {
            ErrorCode::InvalidSubject
            | ErrorCode::InvalidQueueName
            | ErrorCode::InvalidArgument
            | ErrorCode::InvalidFilter
            | ErrorCode::PermissionDenied
            | ErrorCode::DuplicateSubscription
            | ErrorCode::TooManySubscriptions
            | ErrorCode::QueuePatternMismatch
            | ErrorCode::TooManyQueues
            | ErrorCode::QueueDeleted
            | ErrorCode::StorageFailed
            | ErrorCode::ShuttingDown => true,
            ErrorCode::UnsupportedVersion
            | ErrorCode::HandshakeRequired
            | ErrorCode::HandshakeTimeout
            | ErrorCode::MalformedFrame
            | ErrorCode::FrameTooLarge
            | ErrorCode::UnknownOpcode
            | ErrorCode::UnexpectedFrame
            | ErrorCode::TooManyConnections
            | ErrorCode::StaleConnection
            | ErrorCode::AuthenticationFailed
            | ErrorCode::TlsRequired
            | ErrorCode::WildcardInSubject
            | ErrorCode::UnknownSubscription
            | ErrorCode::NotAQueueSubscription
            | ErrorCode::UnknownDelivery
            | ErrorCode::QueueFull
            | ErrorCode::NoResponders
            | ErrorCode::UnknownQueue
            | ErrorCode::QueueInUse
            | ErrorCode::MemoryLimit
            | ErrorCode::Internal => false,
        }
    }

    /// The documented name, as used in `PROTOCOL.md` and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::HandshakeRequired => "HANDSHAKE_REQUIRED",
            ErrorCode::HandshakeTimeout => "HANDSHAKE_TIMEOUT",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownOpcode => "UNKNOWN_OPCODE",
            ErrorCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::StaleConnection => "STALE_CONNECTION",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::TlsRequired => "TLS_REQUIRED",
            ErrorCode::InvalidSubject => "INVALID_SUBJECT",
            ErrorCode::WildcardInSubject => "WILDCARD_IN_SUBJECT",
            ErrorCode::InvalidQueueName => "INVALID_QUEUE_NAME",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidFilter => "INVALID_FILTER",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::UnknownSubscription => "UNKNOWN_SUBSCRIPTION",
            ErrorCode::DuplicateSubscription => "DUPLICATE_SUBSCRIPTION",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::QueuePatternMismatch => "QUEUE_PATTERN_MISMATCH",
            ErrorCode::NotAQueueSubscription => "NOT_A_QUEUE_SUBSCRIPTION",
            ErrorCode::UnknownDelivery => "UNKNOWN_DELIVERY",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::NoResponders => "NO_RESPONDERS",
            ErrorCode::TooManyQueues => "TOO_MANY_QUEUES",
            ErrorCode::UnknownQueue => "UNKNOWN_QUEUE",
            ErrorCode::QueueInUse => "QUEUE_IN_USE",
            ErrorCode::QueueDeleted => "QUEUE_DELETED",
            ErrorCode::MemoryLimit => "MEMORY_LIMIT",
            ErrorCode::StorageFailed => "STORAGE_FAILED",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = u16;

    /// Maps a wire value to a known code; an unknown value comes back as the error
    /// (a newer server may send codes this crate does not know yet).
    fn try_from(value: u16) -> Result<Self, u16> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_u16() == value)
            .ok_or(value)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique_and_ordered() {
        let mut previous = 0;
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(code.as_u16()), Ok(code));
            assert!(code.as_u16() > previous, "{code} out of order");
            previous = code.as_u16();
        }
        assert_eq!(ErrorCode::try_from(4242), Err(4242));
    }
}
