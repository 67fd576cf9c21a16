//! Why a connection ended: one value per connection, logged once and counted in
//! `tern_connections_closed_total{reason}`.

use tern_proto::ErrorCode;

/// Why a connection ended. Logged once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed the connection.
    ClientClosed,
    /// The client broke the protocol; it was sent this error first.
    ProtocolViolation(ErrorCode),
    /// No HELLO in time.
    HandshakeTimeout,
    /// No traffic in answer to keepalive PINGs.
    Stale,
    /// The broker shut down.
    ShutDown,
    /// Reading the socket failed.
    ReadFailed,
    /// Writing the socket failed.
    WriteFailed,
    /// The client did not read for longer than the write deadline.
    SlowConsumer,
    /// Closed through the connection registry (an operator's request).
    ClosedByAdmin,
    /// HELLO's credential names no user of `AUTH_FILE`.
    AuthenticationFailed,
    /// A reload of `AUTH_FILE` removed the user or changed its credential.
    AccessRevoked,
}

impl CloseReason {
    /// Number of distinct labels (for counters indexed by [`CloseReason::index`]).
    pub const COUNT: usize = 11;

    /// Every label, in index order.
    pub const LABELS: [&'static str; CloseReason::COUNT] = [
        "client_closed",
        "protocol_violation",
        "handshake_timeout",
        "stale",
        "shutdown",
        "read_failed",
        "write_failed",
        "slow_consumer",
        "closed_by_admin",
        "authentication_failed",
        "access_revoked",
    ];

    /// Position of this reason's label in [`CloseReason::LABELS`].
    pub fn index(self) -> usize {
        match self {
            CloseReason::ClientClosed => 0,
            CloseReason::ProtocolViolation(_) => 1,
            CloseReason::HandshakeTimeout => 2,
            CloseReason::Stale => 3,
            CloseReason::ShutDown => 4,
            CloseReason::ReadFailed => 5,
            CloseReason::WriteFailed => 6,
            CloseReason::SlowConsumer => 7,
            CloseReason::ClosedByAdmin => 8,
            CloseReason::AuthenticationFailed => 9,
            CloseReason::AccessRevoked => 10,
        }
    }

    /// A stable label for logs and counters.
    pub fn as_str(self) -> &'static str {
        CloseReason::LABELS[self.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_label() {
        let reasons = [
            CloseReason::ClientClosed,
            CloseReason::ProtocolViolation(ErrorCode::MalformedFrame),
            CloseReason::HandshakeTimeout,
            CloseReason::Stale,
            CloseReason::ShutDown,
            CloseReason::ReadFailed,
            CloseReason::WriteFailed,
            CloseReason::SlowConsumer,
            CloseReason::ClosedByAdmin,
            CloseReason::AuthenticationFailed,
            CloseReason::AccessRevoked,
        ];
        let indexes: Vec<usize> = reasons.iter().map(|reason| reason.index()).collect();
        assert_eq!(indexes, (0..CloseReason::COUNT).collect::<Vec<_>>());
        assert_eq!(CloseReason::Stale.as_str(), "stale");
    }
}
