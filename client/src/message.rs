//! Messages received and messages to send.

use bytes::Bytes;
use bytestring::ByteString;
use tern_proto::Header;

/// A message received from the broker (the protocol crate's type).
pub use tern_proto::Message;

/// A message to publish, with optional headers and reply-to.
///
/// ```
/// use tern_client::OutgoingMessage;
/// let message = OutgoingMessage::new("orders.eu.created", "{\"id\":1}")
///     .header("content-type", "application/json")
///     .reply_to("orders.replies");
/// assert_eq!(message.subject, "orders.eu.created");
/// ```
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Literal subject.
    pub subject: String,
    /// Reply-to subject.
    pub reply_to: Option<String>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Payload.
    pub payload: Bytes,
}

impl OutgoingMessage {
    /// A message with a subject and payload.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        OutgoingMessage {
            subject: subject.into(),
            reply_to: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Adds a header (names may repeat).
    pub fn header(mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the reply-to subject.
    pub fn reply_to(mut self, subject: impl Into<String>) -> Self {
        self.reply_to = Some(subject.into());
        self
    }
}
