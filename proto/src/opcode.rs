//! One-byte frame type identifiers.
//!
//! Client-to-server frames use `0x01..=0x0F`, frames valid in both directions
//! `0x10..=0x1F`, server-to-client frames `0x80..=0x8F`. A gap is a retired or
//! reserved value, never reused for something else.

/// The opcode byte that follows a frame's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Opcode {
    /// Client → server: handshake, the first frame on every connection.
    Hello = 0x01,
    /// Client → server: publish a message to a subject.
    Publish = 0x02,
    /// Client → server: subscribe to a pattern (broadcast) or join a queue.
    Subscribe = 0x03,
    /// Client → server: end a subscription.
    Unsubscribe = 0x04,
    /// Client → server: acknowledge a queue delivery.
    Ack = 0x05,
    /// Client → server: reject a queue delivery, optionally requeueing it.
    Nack = 0x06,
    /// Client → server: set a queue subscription's delivery window.
    Credit = 0x07,
    /// Client → server: list every queue (answered by QUEUE_INFO frames, then QUEUE_OK).
    QueueList = 0x08,
    /// Client → server: remove a queue's ready messages (answered by QUEUE_OK).
    QueuePurge = 0x09,
    /// Client → server: delete a queue (answered by QUEUE_OK).
    QueueDelete = 0x0A,
    /// Client → server (protocol version 2): SUBSCRIBE with a header filter.
    SubscribeFiltered = 0x0B,
    /// Either direction: liveness probe; the peer answers with PONG.
    Ping = 0x10,
    /// Either direction: answer to PING.
    Pong = 0x11,
    /// Server → client: handshake accepted, with the server's limits.
    Welcome = 0x81,
    /// Server → client: a message for one of the client's subscriptions.
    Deliver = 0x82,
    /// Server → client: a confirmed publish was accepted.
    PublishOk = 0x83,
    /// Server → client: a confirmed publish was refused.
    PublishError = 0x84,
    /// Server → client: a subscription is active.
    SubscribeOk = 0x85,
    /// Server → client: messages for a subscription were dropped (slow consumer).
    Lagged = 0x86,
    /// Server → client: a request failed, or the connection is about to close.
    Error = 0x87,
    /// Server → client: the server is shutting down and will close the connection.
    Goodbye = 0x88,
    /// Server → client: one queue, answering QUEUE_LIST.
    QueueInfo = 0x89,
    /// Server → client: a queue administration request succeeded.
    QueueOk = 0x8A,
}

impl TryFrom<u8> for Opcode {
    type Error = u8;

    /// Maps a wire byte to an opcode; the unknown byte comes back as the error.
    fn try_from(byte: u8) -> Result<Self, u8> {
        Ok(match byte {
            0x01 => Opcode::Hello,
            0x02 => Opcode::Publish,
            0x03 => Opcode::Subscribe,
            0x04 => Opcode::Unsubscribe,
            0x05 => Opcode::Ack,
            0x06 => Opcode::Nack,
            0x07 => Opcode::Credit,
            0x08 => Opcode::QueueList,
            0x09 => Opcode::QueuePurge,
            0x0A => Opcode::QueueDelete,
            0x0B => Opcode::SubscribeFiltered,
            0x10 => Opcode::Ping,
            0x11 => Opcode::Pong,
            0x81 => Opcode::Welcome,
            0x82 => Opcode::Deliver,
            0x83 => Opcode::PublishOk,
            0x84 => Opcode::PublishError,
            0x85 => Opcode::SubscribeOk,
            0x86 => Opcode::Lagged,
            0x87 => Opcode::Error,
            0x88 => Opcode::Goodbye,
            0x89 => Opcode::QueueInfo,
            0x8A => Opcode::QueueOk,
            other => return Err(other),
        })
    }
}

impl Opcode {
    /// True for frames a client may send to the server.
    pub fn is_client_to_server(self) -> bool {
        (self as u8) < 0x80
    }

    /// True for frames a server may send to a client.
    pub fn is_server_to_client(self) -> bool {
        matches!(self, Opcode::Ping | Opcode::Pong) || (self as u8) >= 0x80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_maps_back_to_itself_or_is_rejected() {
        for byte in 0..=u8::MAX {
            if let Ok(opcode) = Opcode::try_from(byte) {
                assert_eq!(opcode as u8, byte);
            }
        }
        assert_eq!(Opcode::try_from(0x7F), Err(0x7F));
    }

    #[test]
    fn ping_and_pong_travel_both_ways() {
        assert!(Opcode::Ping.is_client_to_server() && Opcode::Ping.is_server_to_client());
        assert!(Opcode::Publish.is_client_to_server() && !Opcode::Publish.is_server_to_client());
        assert!(!Opcode::Deliver.is_client_to_server() && Opcode::Deliver.is_server_to_client());
    }
}
