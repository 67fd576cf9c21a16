//! Errors returned by the SDK.

use tern_proto::{ErrorCode, FilterError, ProtocolError, SubjectError};

/// Everything that can go wrong talking to a Tern broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialled.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS could not be set up: a CA or certificate file that does not load, or a
    /// handshake the broker's certificate failed (untrusted, expired, wrong name).
    #[error("TLS: {message}")]
    Tls {
        /// What went wrong.
        message: String,
    },
    /// The broker refused the handshake (for example, an unsupported version).
    #[error("handshake refused: {message} ({})", code_label(*code))]
    Handshake {
        /// Wire error code.
        code: u16,
        /// The broker's explanation.
        message: String,
    },
    /// The broker refused an operation (publish, subscribe, ...).
    #[error("refused by the broker: {message} ({})", code_label(*code))]
    Refused {
        /// Wire error code; see [`ErrorCode`].
        code: u16,
        /// The broker's explanation.
        message: String,
    },
    /// A request matched nobody who could answer it.
    #[error("no responders for `{subject}`")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection was lost before the operation completed. It may or may not have
    /// reached the broker.
    #[error("disconnected from the broker")]
    Disconnected,
    /// The client was closed (or gave up reconnecting).
    #[error("client closed")]
    Closed,
    /// A subject or pattern is invalid; nothing was sent.
    #[error("invalid subject: {0}")]
    InvalidSubject(#[from] SubjectError),
    /// A header filter that does not parse (found before anything is sent).
    #[error("{0}")]
    InvalidFilter(#[from] FilterError),
    /// The broker does not speak what this call needs (it speaks an older protocol
    /// version).
    #[error("the broker speaks protocol version {version}; {feature} needs version {needed}")]
    Unsupported {
        /// What was asked for.
        feature: &'static str,
        /// The version the connection speaks.
        version: u16,
        /// The version needed.
        needed: u16,
    },
    /// The message would exceed the broker's frame limit; nothing was sent.
    #[error("message of {size} bytes exceeds the broker's frame limit of {max} bytes")]
    TooLarge {
        /// Encoded frame size.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The delivery came over a previous connection; the broker has already requeued it.
    #[error("delivery belongs to a previous connection and was requeued by the broker")]
    StaleDelivery,
    /// A received message has no reply-to to respond to.
    #[error("the message has no reply-to subject")]
    NoReplyTo,
    /// The bytes from the broker were not valid protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The broker's error code, for errors that carry one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Handshake { code, .. } | ClientError::Refused { code, .. } => {
                ErrorCode::try_from(*code).ok()
            }
            ClientError::NoResponders { .. } => Some(ErrorCode::NoResponders),
            _ => None,
        }
    }
}

/// `QUEUE_FULL (500)` for known codes, `code 4242` for codes newer than this SDK.
fn code_label(code: u16) -> String {
    match ErrorCode::try_from(code) {
        Ok(known) => known.to_string(),
        Err(unknown) => format!("code {unknown}"),
    }
}
