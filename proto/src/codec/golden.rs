//! Golden fixtures: one example of every frame type, whose exact bytes
//! `PROTOCOL.md` shows; the tests below keep the two identical.

use crate::error_code::ErrorCode;
use crate::frame::{
    Deliver, DeliveryMode, Frame, Goodbye, Header, Hello, Publish, PublishError, QueueInfo, Role,
    Subscribe, SubscribeFiltered, Welcome,
};
use crate::message::Message;

/// One example of every frame type with its exact bytes. The same list is checked
/// against `PROTOCOL.md`, so the spec's hex examples cannot drift from the code.
#[doc(hidden)]
pub fn golden_examples() -> Vec<(&'static str, Frame)> {
    let header = || vec![Header::new("k", "v")];
    let example = |subject, reply_to, headers: &[Header], payload: &[u8]| {
        Message::encode(subject, reply_to, headers, payload)
            .expect("the examples fit the wire's limits")
    };
    vec![
        (
            "HELLO",
            Frame::Hello(Hello {
                version: 1,
                role: Role::Both,
                client_name: "cli".into(),
                auth_token: "".into(),
            }),
        ),
        (
            "PUBLISH (fire and forget)",
            Frame::Publish(Publish {
                sequence: 0,
                message: example("orders.eu", None, &[], b"hi"),
            }),
        ),
        (
            "PUBLISH (confirmed request with header)",
            Frame::Publish(Publish {
                sequence: 7,
                message: example("svc.echo", Some("_INBOX.a1.1"), &header(), b"ping"),
            }),
        ),
        (
            "SUBSCRIBE (broadcast)",
            Frame::Subscribe(Subscribe {
                sid: 1,
                mode: Some(DeliveryMode::Broadcast),
                prefetch: 0,
                pattern: "orders.*".into(),
                queue: None,
            }),
        ),
        (
            "SUBSCRIBE (queue)",
            Frame::Subscribe(Subscribe {
                sid: 2,
                mode: Some(DeliveryMode::Queue),
                prefetch: 10,
                pattern: "orders.>".into(),
                queue: Some("billing".into()),
            }),
        ),
        (
            "SUBSCRIBE_FILTERED",
            Frame::SubscribeFiltered(SubscribeFiltered {
                subscribe: Subscribe {
                    sid: 3,
                    mode: Some(DeliveryMode::Queue),
                    prefetch: 0,
                    pattern: "".into(),
                    queue: Some("events".into()),
                },
                filter: "device = 'd1'".into(),
            }),
        ),
        ("UNSUBSCRIBE", Frame::Unsubscribe { sid: 1 }),
        (
            "ACK",
            Frame::Ack {
                delivery_id: 0x0000_0002_0000_0001,
            },
        ),
        (
            "NACK",
            Frame::Nack {
                delivery_id: 0x0000_0002_0000_0001,
                requeue: true,
            },
        ),
        (
            "CREDIT",
            Frame::Credit {
                sid: 2,
                prefetch: 0,
            },
        ),
        ("QUEUE_LIST", Frame::QueueList { request_id: 3 }),
        (
            "QUEUE_PURGE",
            Frame::QueuePurge {
                request_id: 4,
                queue: "billing".into(),
            },
        ),
        (
            "QUEUE_DELETE",
            Frame::QueueDelete {
                request_id: 5,
                queue: "billing".into(),
                force: true,
            },
        ),
        ("PING", Frame::Ping),
        ("PONG", Frame::Pong),
        (
            "WELCOME",
            Frame::Welcome(Welcome {
                version: 1,
                connection_id: 1,
                max_frame_bytes: 1_048_576,
                max_subject_length: 256,
                max_subscriptions: 10,
                default_prefetch: 64,
                server_name: "tern".into(),
            }),
        ),
        (
            "DELIVER (broadcast)",
            Frame::Deliver(Deliver {
                sid: 1,
                delivery_id: 0,
                redelivered: false,
                message: example("orders.eu", None, &[], b"hi"),
            }),
        ),
        (
            "DELIVER (queue, redelivered, with reply-to and header)",
            Frame::Deliver(Deliver {
                sid: 2,
                delivery_id: 0x0000_0002_0000_0001,
                redelivered: true,
                message: example("orders.eu", Some("r"), &header(), b"hi"),
            }),
        ),
        ("PUBLISH_OK", Frame::PublishOk { sequence: 7 }),
        (
            "PUBLISH_ERROR",
            Frame::PublishError(PublishError {
                sequence: 7,
                code: ErrorCode::QueueFull.as_u16(),
                message: "queue full".into(),
            }),
        ),
        ("SUBSCRIBE_OK", Frame::SubscribeOk { sid: 1 }),
        ("LAGGED", Frame::Lagged { sid: 1, missed: 42 }),
        (
            "ERROR",
            Frame::error(ErrorCode::UnknownDelivery, 0x0000_0002_0000_0001, "unknown"),
        ),
        (
            "QUEUE_INFO",
            Frame::QueueInfo(QueueInfo {
                request_id: 3,
                name: "billing".into(),
                pattern: "orders.>".into(),
                ready: 2,
                unacked: 1,
                consumers: 1,
                bytes: 30,
            }),
        ),
        (
            "QUEUE_OK",
            Frame::QueueOk {
                request_id: 3,
                count: 1,
            },
        ),
        (
            "GOODBYE",
            Frame::Goodbye(Goodbye {
                code: ErrorCode::ShuttingDown.as_u16(),
                message: "bye".into(),
            }),
        ),
    ]
}

/// Formats bytes as lowercase hex pairs separated by spaces, as `PROTOCOL.md` shows them.
#[doc(hidden)]
pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::decode;

    const MAX: u32 = crate::DEFAULT_MAX_FRAME_BYTES;

    fn encoded(frame: &Frame) -> Vec<u8> {
        frame.to_bytes().expect("example frames encode").to_vec()
    }

    #[test]
    fn every_golden_example_round_trips() {
        for (name, frame) in golden_examples() {
            let mut buf = BytesMut::from(&encoded(&frame)[..]);
            let decoded = decode(&mut buf, MAX).expect(name).expect(name);
            assert_eq!(decoded, frame, "{name}");
            assert!(buf.is_empty(), "{name} left bytes behind");
        }
    }

    #[test]
    fn golden_bytes_pin_the_layout() {
        let hello = Frame::Hello(Hello {
            version: 1,
            role: Role::Both,
            client_name: "cli".into(),
            auth_token: "".into(),
        });
        assert_eq!(
            to_hex(&encoded(&hello)),
            "00 00 00 0b 01 00 01 03 00 03 63 6c 69 00 00"
        );
        let publish = Frame::Publish(Publish {
            sequence: 0,
            message: Message::new("a", "x").expect("valid"),
        });
        assert_eq!(
            to_hex(&encoded(&publish)),
            "00 00 00 11 02 00 00 00 00 00 00 00 00 00 01 61 00 00 00 00 78"
        );
        assert_eq!(to_hex(&encoded(&Frame::Ping)), "00 00 00 01 10");
    }

    #[test]
    fn protocol_md_shows_the_exact_bytes_of_every_example() {
        let spec = include_str!("../../PROTOCOL.md");
        for (name, frame) in golden_examples() {
            let hex = to_hex(&encoded(&frame));
            assert!(
                spec.contains(&hex),
                "PROTOCOL.md lacks the bytes of {name}:\n{hex}"
            );
        }
    }
}
