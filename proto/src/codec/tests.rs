//! Codec tests: round trips, truncation at every byte, malformed input, and
//! property tests over arbitrary frames and bytes.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::frame::{
    Deliver, DeliveryMode, ErrorFrame, Frame, Header, Hello, Publish, Role, Subscribe,
};
use crate::message::Message;
use crate::{ErrorCode, LENGTH_PREFIX_BYTES};

const MAX: u32 = crate::DEFAULT_MAX_FRAME_BYTES;

fn encoded(frame: &Frame) -> Vec<u8> {
    frame.to_bytes().expect("example frames encode").to_vec()
}

#[test]
fn a_deliver_head_plus_its_payload_equals_the_whole_frame() {
    let headers = [Header::new("k", "v")];
    let payload = b"a large payload, sent separately";
    let message = Message::encode("s.t", Some("r"), &headers, payload).expect("message");
    let mut whole = BytesMut::new();
    encode_deliver(&mut whole, 3, 9, true, &message).expect("whole");
    let mut split = BytesMut::new();
    encode_deliver_head(&mut split, 3, 9, true, &message).expect("head");
    split.extend_from_slice(message.payload());
    assert_eq!(split, whole);
    let decoded = decode(&mut whole, crate::DEFAULT_MAX_FRAME_BYTES).expect("decodes");
    assert_eq!(
        decoded,
        Some(Frame::Deliver(Deliver {
            sid: 3,
            delivery_id: 9,
            redelivered: true,
            message
        }))
    );
}
#[test]
fn a_frame_cut_at_any_byte_is_incomplete_not_an_error() {
    for (name, frame) in golden_examples() {
        let bytes = encoded(&frame);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert!(
                matches!(decode(&mut buf, MAX), Ok(None)),
                "{name} cut at {cut}"
            );
            assert_eq!(
                buf.len(),
                cut,
                "{name}: incomplete input must not be consumed"
            );
        }
    }
}

#[test]
fn a_body_shortened_at_any_byte_is_an_error_or_a_shorter_payload() {
    for (name, frame) in golden_examples() {
        let bytes = encoded(&frame);
        for body_len in 1..bytes.len() - LENGTH_PREFIX_BYTES {
            let mut cut = BytesMut::new();
            cut.put_u32(body_len as u32);
            cut.put_slice(&bytes[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + body_len]);
            match decode(&mut cut, MAX) {
                Err(_) => {}
                Ok(Some(Frame::Publish(p))) => {
                    assert!(
                        matches!(&frame, Frame::Publish(f) if f.message.payload().starts_with(p.message.payload())),
                        "{name}"
                    )
                }
                Ok(Some(Frame::Deliver(d))) => {
                    assert!(
                        matches!(&frame, Frame::Deliver(f) if f.message.payload().starts_with(d.message.payload())),
                        "{name}"
                    )
                }
                other => panic!("{name} with body cut to {body_len}: {other:?}"),
            }
        }
    }
}

#[test]
fn an_oversized_length_is_rejected_before_the_body_arrives() {
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x01][..]);
    let error = decode(&mut buf, MAX).expect_err("too large");
    assert!(matches!(
        error,
        ProtocolError::FrameTooLarge {
            length: 0x100001,
            ..
        }
    ));
    assert_eq!(error.error_code(), ErrorCode::FrameTooLarge);
    assert!(
        buf.capacity() < 1024,
        "nothing reserved for the announced length"
    );
}

#[test]
fn a_zero_length_frame_is_malformed() {
    let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
    assert!(matches!(
        decode(&mut buf, MAX),
        Err(ProtocolError::EmptyFrame)
    ));
}

#[test]
fn an_unknown_opcode_is_consumed_and_the_next_frame_still_decodes() {
    let mut buf = BytesMut::from(&[0, 0, 0, 2, 0x7e, 0xaa, 0, 0, 0, 1, 0x10][..]);
    assert!(matches!(
        decode(&mut buf, MAX),
        Err(ProtocolError::UnknownOpcode(0x7e))
    ));
    assert_eq!(decode(&mut buf, MAX).expect("aligned"), Some(Frame::Ping));
}

#[test]
fn invalid_utf8_in_a_subject_names_the_field() {
    let mut frame = BytesMut::new();
    frame.put_u32(1 + 8 + 2 + 2 + 2 + 2);
    frame.put_u8(Opcode::Publish as u8);
    frame.put_u64(0);
    frame.put_u16(2);
    frame.put_slice(&[0xff, 0xfe]);
    frame.put_u16(0);
    frame.put_u16(0);
    let error = decode(&mut frame, MAX).expect_err("bad utf-8");
    assert!(
        matches!(
            error,
            ProtocolError::InvalidUtf8 {
                field: "subject",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_header_count_larger_than_the_frame_is_truncated_not_allocated() {
    let mut frame = BytesMut::new();
    frame.put_u32(1 + 8 + 2 + 1 + 2 + 2);
    frame.put_u8(Opcode::Publish as u8);
    frame.put_u64(0);
    frame.put_u16(1);
    frame.put_slice(b"a");
    frame.put_u16(0);
    frame.put_u16(u16::MAX);
    assert!(matches!(
        decode(&mut frame, MAX),
        Err(ProtocolError::Truncated {
            field: "headers",
            ..
        })
    ));
}

#[test]
fn encoding_a_too_long_string_fails_without_writing_anything() {
    let mut dst = BytesMut::from(&b"keep"[..]);
    let long = "x".repeat(70_000);
    let error =
        encode_publish(&mut dst, 0, &long, None, &[], b"").expect_err("subject longer than u16");
    assert!(matches!(
        error,
        ProtocolError::FieldTooLong {
            field: "subject",
            ..
        }
    ));
    assert_eq!(&dst[..], b"keep");
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9._>*-]{0,12}"
}

fn arbitrary_frame() -> impl Strategy<Value = Frame> {
    let headers = || {
        proptest::collection::vec((text(), text()), 0..3).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| Header::new(name, value))
                .collect::<Vec<_>>()
        })
    };
    let optional = || proptest::option::of("[a-z]{1,8}");
    prop_oneof![
        (any::<u16>(), 1u8..=3, text(), text()).prop_map(|(version, role, name, token)| {
            Frame::Hello(Hello {
                version,
                role: Role::try_from(role).expect("1..=3"),
                client_name: name.into(),
                auth_token: token.into(),
            })
        }),
        (
            any::<u64>(),
            text(),
            optional(),
            headers(),
            any::<Vec<u8>>()
        )
            .prop_map(|(sequence, subject, reply_to, headers, payload)| {
                Frame::Publish(Publish {
                    sequence,
                    message: Message::encode(&subject, reply_to.as_deref(), &headers, &payload)
                        .expect("generated fields fit"),
                })
            }),
        (any::<u32>(), 0u8..=2, any::<u32>(), text(), optional()).prop_map(
            |(sid, mode, prefetch, pattern, queue)| Frame::Subscribe(Subscribe {
                sid,
                mode: DeliveryMode::try_from(mode).ok(),
                prefetch,
                pattern: pattern.into(),
                queue: queue.map(Into::into),
            })
        ),
        (
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            text(),
            optional(),
            headers(),
            any::<Vec<u8>>()
        )
            .prop_map(
                |(sid, delivery_id, redelivered, subject, reply_to, headers, payload)| {
                    Frame::Deliver(Deliver {
                        sid,
                        delivery_id,
                        redelivered,
                        message: Message::encode(&subject, reply_to.as_deref(), &headers, &payload)
                            .expect("generated fields fit"),
                    })
                }
            ),
        (any::<u64>(), any::<bool>()).prop_map(|(delivery_id, requeue)| Frame::Nack {
            delivery_id,
            requeue
        }),
        (any::<u16>(), any::<u64>(), text()).prop_map(|(code, context, message)| {
            Frame::Error(ErrorFrame {
                code,
                context,
                message: message.into(),
            })
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(sid, missed)| Frame::Lagged { sid, missed }),
    ]
}

proptest! {
    #[test]
    fn any_frame_round_trips_even_when_fed_in_pieces(
        frames in proptest::collection::vec(arbitrary_frame(), 1..6),
        chunk in 1usize..40,
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire).expect("encodes");
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decode(&mut buf, MAX).expect("valid stream") {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..50 {
            match decode(&mut buf, 64) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(error) if error.is_recoverable() => continue,
                Err(_) => break,
            }
        }
    }
}
