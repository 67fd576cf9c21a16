//! A published message: what PUBLISH carries in and DELIVER carries out, shared by
//! the broker (which routes it) and clients (which receive it).

use bytes::Bytes;
use bytestring::ByteString;

use crate::frame::Header;

/// One published message.
///
/// Decoded fields are slices of the received frame: building a `Message` from a
/// frame copies nothing, and cloning one only bumps reference counts. The broker
/// routes a borrowed [`MessageView`] and keeps an `Arc<Message>` only where it
/// must hold the message (queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The literal subject it was published to.
    pub subject: ByteString,
    /// Where the publisher wants replies, if it is a request.
    pub reply_to: Option<ByteString>,
    /// Headers, in publish order (names may repeat).
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// The message, borrowed.
    ///
    /// ```
    /// use tern_proto::Message;
    /// let message = Message { subject: "a".into(), reply_to: None, headers: vec![], payload: "x".into() };
    /// assert_eq!(message.view().subject, "a");
    /// assert_eq!(message.view().to_message(), message);
    /// ```
    pub fn view(&self) -> MessageView<'_> {
        MessageView {
            subject: &self.subject,
            reply_to: self.reply_to.as_ref(),
            headers: &self.headers,
            payload: &self.payload,
        }
    }

    /// The first header called `name`.
    ///
    /// ```
    /// use tern_proto::{Header, Message};
    /// let message = Message {
    ///     subject: "orders.eu".into(),
    ///     reply_to: None,
    ///     headers: vec![Header::new("trace-id", "abc")],
    ///     payload: "order 42".into(),
    /// };
    /// assert_eq!(message.header("trace-id"), Some("abc"));
    /// assert_eq!(message.header("missing"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| &*header.name == name)
            .map(|header| &*header.value)
    }

    /// A copy whose fields own exactly their bytes.
    ///
    /// A decoded message keeps its whole receive buffer alive. Something that holds
    /// messages for long (a queue) compacts them, so that its memory is proportional
    /// to what it holds.
    ///
    /// ```
    /// use tern_proto::Message;
    /// let buffer = bytes::Bytes::from(vec![b'x'; 4096]);
    /// let message = Message { subject: "a".into(), reply_to: None, headers: vec![], payload: buffer.slice(0..2) };
    /// let compact = message.compacted();
    /// assert_eq!(compact, message);
    /// ```
    pub fn compacted(&self) -> Message {
        let own = |text: &ByteString| ByteString::from(&**text);
        Message {
            subject: own(&self.subject),
            reply_to: self.reply_to.as_ref().map(own),
            headers: self
                .headers
                .iter()
                .map(|header| Header::new(own(&header.name), own(&header.value)))
                .collect(),
            payload: Bytes::copy_from_slice(&self.payload),
        }
    }
}

/// A message borrowed from wherever it lives (a decoded PUBLISH, a queued
/// [`Message`]): what the broker routes and encodes into each subscriber's buffer
/// without moving the frame or touching a reference count per delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    /// The literal subject it was published to.
    pub subject: &'a ByteString,
    /// Where the publisher wants replies, if it is a request.
    pub reply_to: Option<&'a ByteString>,
    /// Headers, in publish order.
    pub headers: &'a [Header],
    /// The payload (shared, so a large one can be sent without copying it).
    pub payload: &'a Bytes,
}

impl MessageView<'_> {
    /// An owned message: the fields are shared (reference counts), not copied.
    pub fn to_message(&self) -> Message {
        Message {
            subject: self.subject.clone(),
            reply_to: self.reply_to.cloned(),
            headers: self.headers.to_vec(),
            payload: self.payload.clone(),
        }
    }
}
