//! A published message as the broker holds it: shared by every subscriber it goes
//! to, never copied per subscriber.

use bytes::Bytes;
use bytestring::ByteString;
use tern_proto::Header;

/// One published message. Routed as `Arc<Message>`: fanning out to N subscribers
/// costs N reference-count increments, not N copies.
#[derive(Debug)]
pub struct Message {
    /// The literal subject it was published to.
    pub subject: ByteString,
    /// The publisher's reply-to, for requests.
    pub reply_to: Option<ByteString>,
    /// Headers, in publish order.
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// A copy whose fields own exactly their bytes.
    ///
    /// Decoded messages are slices of the connection's read buffer, which keeps the
    /// whole buffer alive. Messages that may sit in a queue for long are compacted so
    /// that a queue's memory is proportional to what it holds.
    pub fn compacted(&self) -> Message {
        let own = |text: &ByteString| ByteString::from(text.as_ref() as &str);
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
