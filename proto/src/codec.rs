//! Sans-IO encoding and incremental decoding of frames.
//!
//! Wire layout (see `PROTOCOL.md`): a 4-byte big-endian length `L` (the number of
//! bytes after the prefix, `1 <= L <= max_frame_bytes`), a 1-byte opcode, then the
//! fields. Integers are big-endian; a string is a `u16` byte length and UTF-8 bytes;
//! headers are a `u16` count of (name string, value string) pairs; a payload is the
//! rest of the frame.
//!
//! [`decode`] consumes at most one frame from a buffer and returns `Ok(None)` until
//! a whole frame is buffered. An oversized length prefix is rejected before any
//! space is reserved for it. A frame whose body fails to parse is still consumed,
//! so the byte stream stays aligned and the caller decides whether to go on.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error_code::ErrorCode;
use crate::frame::{
    Deliver, DeliveryMode, ErrorFrame, Frame, Goodbye, Header, Hello, Publish, PublishError, Role,
    Subscribe, Welcome,
};
use crate::message::{put_message_fields, Message};
use crate::opcode::Opcode;
use crate::LENGTH_PREFIX_BYTES;

/// Bit 0 of DELIVER's flags byte: the message was delivered before.
pub const FLAG_REDELIVERED: u8 = 0b0000_0001;

/// Why bytes could not be turned into a frame, or a frame into bytes.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix exceeds the receiver's maximum; nothing was allocated for it.
    #[error("frame length {length} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        length: u64,
        /// The receiver's limit.
        max: u32,
    },
    /// A length prefix of 0: every frame has at least an opcode.
    #[error("frame length 0: every frame carries at least an opcode")]
    EmptyFrame,
    /// The opcode byte is unknown. The frame was consumed; the stream is still aligned.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// The frame ended in the middle of a field.
    #[error("{opcode:?} frame ends inside field `{field}`")]
    Truncated {
        /// The frame being decoded.
        opcode: Opcode,
        /// The field that did not fit.
        field: &'static str,
    },
    /// A fixed-layout frame had bytes after its last field.
    #[error("{opcode:?} frame has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The frame being decoded.
        opcode: Opcode,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("{opcode:?} field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The frame being decoded.
        opcode: Opcode,
        /// The offending field.
        field: &'static str,
    },
    /// A field holds a value outside its documented range (a role of 7, a bool of 2).
    #[error("{opcode:?} field `{field}` has invalid value {value}")]
    InvalidValue {
        /// The frame being decoded.
        opcode: Opcode,
        /// The offending field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Encoding: a string is longer than the 65,535 bytes its length field can say.
    #[error("field `{field}` is {length} bytes; strings are limited to 65535")]
    FieldTooLong {
        /// The offending field.
        field: &'static str,
        /// Its length.
        length: usize,
    },
    /// Encoding: the frame would not fit a 32-bit length prefix.
    #[error("frame of {length} bytes does not fit a 32-bit length")]
    FrameOverflow {
        /// The frame's length.
        length: usize,
    },
    /// Reading or writing the transport failed (tokio-util adapter only).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// The error code a server reports for this decoding failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            ProtocolError::Io(_) => ErrorCode::Internal,
            _ => ErrorCode::MalformedFrame,
        }
    }

    /// Whether the byte stream can still be trusted after this error. Only an unknown
    /// opcode leaves it aligned with a well-formed frame consumed.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, ProtocolError::UnknownOpcode(_))
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), `Ok(Some)` with
/// the frame consumed, or an error. On [`ProtocolError::FrameTooLarge`] and
/// [`ProtocolError::EmptyFrame`] nothing is consumed and the stream cannot be resumed;
/// on any other error the offending frame has been consumed.
pub fn decode(buf: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, ProtocolError> {
    let Some(length) = peek_length(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    let total = LENGTH_PREFIX_BYTES + length;
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(LENGTH_PREFIX_BYTES);
    let opcode = frame.get_u8();
    decode_body(opcode, frame).map(Some)
}

/// Reads and checks the length prefix at the front of `buf` without consuming it.
///
/// `Ok(None)` means fewer than four bytes are buffered. Callers use the returned
/// length to size their read buffer for a partly received frame.
pub fn peek_length(buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, ProtocolError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if length == 0 {
        return Err(ProtocolError::EmptyFrame);
    }
    if length > max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge {
            length: u64::from(length),
            max: max_frame_bytes,
        });
    }
    Ok(Some(length as usize))
}

/// Decodes a frame body: the bytes after the opcode of one complete frame.
///
/// Inlined into [`decode`], so the frame is built where the caller keeps it rather
/// than copied out of an intermediate `Result`.
#[inline]
pub fn decode_body(opcode_byte: u8, body: Bytes) -> Result<Frame, ProtocolError> {
    let opcode = Opcode::try_from(opcode_byte).map_err(ProtocolError::UnknownOpcode)?;
    let mut body = Body {
        bytes: body,
        opcode,
    };
    let frame = match opcode {
        Opcode::Hello => {
            let version = body.u16("version")?;
            let role_byte = body.u8("role")?;
            let role = Role::try_from(role_byte).map_err(|value| body.invalid("role", value))?;
            let client_name = body.string("client_name")?;
            let auth_token = body.string("auth_token")?;
            body.end()?;
            Frame::Hello(Hello {
                version,
                role,
                client_name,
                auth_token,
            })
        }
        Opcode::Publish => {
            let sequence = body.u64("sequence")?;
            let message = Message::decode(body.rest(), opcode)?;
            Frame::Publish(Publish { sequence, message })
        }
        Opcode::Subscribe => {
            let sid = body.u32("sid")?;
            let mode_byte = body.u8("mode")?;
            let mode = match mode_byte {
                0 => None,
                other => Some(
                    DeliveryMode::try_from(other).map_err(|value| body.invalid("mode", value))?,
                ),
            };
            let prefetch = body.u32("prefetch")?;
            let pattern = body.string("pattern")?;
            let queue = body.optional_string("queue")?;
            body.end()?;
            Frame::Subscribe(Subscribe {
                sid,
                mode,
                prefetch,
                pattern,
                queue,
            })
        }
        Opcode::Unsubscribe => {
            let sid = body.u32("sid")?;
            body.end()?;
            Frame::Unsubscribe { sid }
        }
        Opcode::Ack => {
            let delivery_id = body.u64("delivery_id")?;
            body.end()?;
            Frame::Ack { delivery_id }
        }
        Opcode::Nack => {
            let delivery_id = body.u64("delivery_id")?;
            let requeue = body.bool("requeue")?;
            body.end()?;
            Frame::Nack {
                delivery_id,
                requeue,
            }
        }
        Opcode::Credit => {
            let sid = body.u32("sid")?;
            let prefetch = body.u32("prefetch")?;
            body.end()?;
            Frame::Credit { sid, prefetch }
        }
        Opcode::Ping => {
            body.end()?;
            Frame::Ping
        }
        Opcode::Pong => {
            body.end()?;
            Frame::Pong
        }
        Opcode::Welcome => {
            let version = body.u16("version")?;
            let connection_id = body.u64("connection_id")?;
            let max_frame_bytes = body.u32("max_frame_bytes")?;
            let max_subject_length = body.u16("max_subject_length")?;
            let max_subscriptions = body.u32("max_subscriptions")?;
            let default_prefetch = body.u32("default_prefetch")?;
            let server_name = body.string("server_name")?;
            body.end()?;
            Frame::Welcome(Welcome {
                version,
                connection_id,
                max_frame_bytes,
                max_subject_length,
                max_subscriptions,
                default_prefetch,
                server_name,
            })
        }
        Opcode::Deliver => {
            let sid = body.u32("sid")?;
            let delivery_id = body.u64("delivery_id")?;
            let flags = body.u8("flags")?;
            let message = Message::decode(body.rest(), opcode)?;
            Frame::Deliver(Deliver {
                sid,
                delivery_id,
                redelivered: flags & FLAG_REDELIVERED != 0,
                message,
            })
        }
        Opcode::PublishOk => {
            let sequence = body.u64("sequence")?;
            body.end()?;
            Frame::PublishOk { sequence }
        }
        Opcode::PublishError => {
            let sequence = body.u64("sequence")?;
            let code = body.u16("code")?;
            let message = body.string("message")?;
            body.end()?;
            Frame::PublishError(PublishError {
                sequence,
                code,
                message,
            })
        }
        Opcode::SubscribeOk => {
            let sid = body.u32("sid")?;
            body.end()?;
            Frame::SubscribeOk { sid }
        }
        Opcode::Lagged => {
            let sid = body.u32("sid")?;
            let missed = body.u64("missed")?;
            body.end()?;
            Frame::Lagged { sid, missed }
        }
        Opcode::Error => {
            let code = body.u16("code")?;
            let context = body.u64("context")?;
            let message = body.string("message")?;
            body.end()?;
            Frame::Error(ErrorFrame {
                code,
                context,
                message,
            })
        }
        Opcode::Goodbye => {
            let code = body.u16("code")?;
            let message = body.string("message")?;
            body.end()?;
            Frame::Goodbye(Goodbye { code, message })
        }
    };
    Ok(frame)
}

/// A cursor over one frame's body that turns short reads into [`ProtocolError`]s.
struct Body {
    bytes: Bytes,
    opcode: Opcode,
}

impl Body {
    fn need(&self, count: usize, field: &'static str) -> Result<(), ProtocolError> {
        if self.bytes.remaining() < count {
            return Err(ProtocolError::Truncated {
                opcode: self.opcode,
                field,
            });
        }
        Ok(())
    }

    fn invalid(&self, field: &'static str, value: u8) -> ProtocolError {
        ProtocolError::InvalidValue {
            opcode: self.opcode,
            field,
            value: u64::from(value),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        self.need(1, field)?;
        Ok(self.bytes.get_u8())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        self.need(2, field)?;
        Ok(self.bytes.get_u16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        self.need(4, field)?;
        Ok(self.bytes.get_u32())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.need(8, field)?;
        Ok(self.bytes.get_u64())
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid(field, other)),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<ByteString, ProtocolError> {
        let length = usize::from(self.u16(field)?);
        self.need(length, field)?;
        let raw = self.bytes.split_to(length);
        ByteString::try_from(raw).map_err(|_| ProtocolError::InvalidUtf8 {
            opcode: self.opcode,
            field,
        })
    }

    fn optional_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<ByteString>, ProtocolError> {
        let value = self.string(field)?;
        Ok((!value.is_empty()).then_some(value))
    }

    fn rest(self) -> Bytes {
        self.bytes
    }

    fn end(self) -> Result<(), ProtocolError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                opcode: self.opcode,
                extra: self.bytes.len(),
            })
        }
    }
}

impl Frame {
    /// Appends this frame's wire bytes to `dst`. On error nothing is appended.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Frame::Publish(publish) => {
                let encoded = publish.message.encoded();
                write_frame(dst, Opcode::Publish, 8 + encoded.len(), |dst| {
                    dst.put_u64(publish.sequence);
                    dst.put_slice(encoded);
                    Ok(())
                })
            }
            Frame::Deliver(deliver) => encode_deliver(
                dst,
                deliver.sid,
                deliver.delivery_id,
                deliver.redelivered,
                &deliver.message,
            ),
            other => write_frame(dst, other.opcode(), 64, |dst| encode_fields(other, dst)),
        }
    }

    /// The frame's wire bytes as a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, ProtocolError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

fn encode_fields(frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
    match frame {
        Frame::Hello(hello) => {
            dst.put_u16(hello.version);
            dst.put_u8(hello.role as u8);
            put_string(dst, "client_name", &hello.client_name)?;
            put_string(dst, "auth_token", &hello.auth_token)?;
        }
        Frame::Subscribe(subscribe) => {
            dst.put_u32(subscribe.sid);
            dst.put_u8(subscribe.mode.map_or(0, |mode| mode as u8));
            dst.put_u32(subscribe.prefetch);
            put_string(dst, "pattern", &subscribe.pattern)?;
            put_string(dst, "queue", subscribe.queue.as_deref().unwrap_or(""))?;
        }
        Frame::Unsubscribe { sid } | Frame::SubscribeOk { sid } => dst.put_u32(*sid),
        Frame::Ack { delivery_id } => dst.put_u64(*delivery_id),
        Frame::Nack {
            delivery_id,
            requeue,
        } => {
            dst.put_u64(*delivery_id);
            dst.put_u8(u8::from(*requeue));
        }
        Frame::Credit { sid, prefetch } => {
            dst.put_u32(*sid);
            dst.put_u32(*prefetch);
        }
        Frame::Ping | Frame::Pong => {}
        Frame::Welcome(welcome) => {
            dst.put_u16(welcome.version);
            dst.put_u64(welcome.connection_id);
            dst.put_u32(welcome.max_frame_bytes);
            dst.put_u16(welcome.max_subject_length);
            dst.put_u32(welcome.max_subscriptions);
            dst.put_u32(welcome.default_prefetch);
            put_string(dst, "server_name", &welcome.server_name)?;
        }
        Frame::PublishOk { sequence } => dst.put_u64(*sequence),
        Frame::PublishError(error) => {
            dst.put_u64(error.sequence);
            dst.put_u16(error.code);
            put_string(dst, "message", &error.message)?;
        }
        Frame::Lagged { sid, missed } => {
            dst.put_u32(*sid);
            dst.put_u64(*missed);
        }
        Frame::Error(error) => {
            dst.put_u16(error.code);
            dst.put_u64(error.context);
            put_string(dst, "message", &error.message)?;
        }
        Frame::Goodbye(goodbye) => {
            dst.put_u16(goodbye.code);
            put_string(dst, "message", &goodbye.message)?;
        }
        Frame::Publish(_) | Frame::Deliver(_) => unreachable!("encoded by their own functions"),
    }
    Ok(())
}

/// Appends a PUBLISH frame built from borrowed fields (no intermediate [`Frame`]).
pub fn encode_publish(
    dst: &mut BytesMut,
    sequence: u64,
    subject: &str,
    reply_to: Option<&str>,
    headers: &[Header],
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let size_hint = 8 + 2 + subject.len() + 2 + reply_to.map_or(0, str::len) + 2 + payload.len();
    write_frame(dst, Opcode::Publish, size_hint, |dst| {
        dst.put_u64(sequence);
        put_message_fields(dst, subject, reply_to, headers, payload)
    })
}

/// Bytes of a DELIVER frame before its message: length prefix, opcode, sid,
/// delivery id and flags.
const DELIVER_FIXED_BYTES: usize = LENGTH_PREFIX_BYTES + 1 + 4 + 8 + 1;

/// Appends a DELIVER frame for `message`: the fixed fields, then the message's
/// encoded fields copied in one piece.
pub fn encode_deliver(
    dst: &mut BytesMut,
    sid: u32,
    delivery_id: u64,
    redelivered: bool,
    message: &Message,
) -> Result<(), ProtocolError> {
    let encoded = message.encoded();
    put_deliver_fixed(dst, sid, delivery_id, redelivered, encoded.len())?;
    dst.put_slice(encoded);
    Ok(())
}

/// Appends a DELIVER frame for `message` without its payload, with a length prefix
/// that counts the payload: the caller sends [`Message::payload`] right after (a
/// vectored write can then send a large payload without copying it).
pub fn encode_deliver_head(
    dst: &mut BytesMut,
    sid: u32,
    delivery_id: u64,
    redelivered: bool,
    message: &Message,
) -> Result<(), ProtocolError> {
    let encoded = message.encoded();
    put_deliver_fixed(dst, sid, delivery_id, redelivered, encoded.len())?;
    dst.put_slice(&encoded[..message.head_len()]);
    Ok(())
}

/// DELIVER's fixed fields, for a message of `message_len` encoded bytes.
fn put_deliver_fixed(
    dst: &mut BytesMut,
    sid: u32,
    delivery_id: u64,
    redelivered: bool,
    message_len: usize,
) -> Result<(), ProtocolError> {
    let length = DELIVER_FIXED_BYTES - LENGTH_PREFIX_BYTES + message_len;
    let length = u32::try_from(length).map_err(|_| ProtocolError::FrameOverflow { length })?;
    dst.reserve(DELIVER_FIXED_BYTES + message_len);
    dst.put_u32(length);
    dst.put_u8(Opcode::Deliver as u8);
    dst.put_u32(sid);
    dst.put_u64(delivery_id);
    dst.put_u8(if redelivered { FLAG_REDELIVERED } else { 0 });
    Ok(())
}

fn write_frame(
    dst: &mut BytesMut,
    opcode: Opcode,
    size_hint: usize,
    fields: impl FnOnce(&mut BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.reserve(LENGTH_PREFIX_BYTES + 1 + size_hint);
    dst.put_u32(0);
    dst.put_u8(opcode as u8);
    if let Err(error) = fields(dst) {
        dst.truncate(start);
        return Err(error);
    }
    let length = dst.len() - start - LENGTH_PREFIX_BYTES;
    let Ok(length32) = u32::try_from(length) else {
        dst.truncate(start);
        return Err(ProtocolError::FrameOverflow { length });
    };
    dst[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&length32.to_be_bytes());
    Ok(())
}

/// Appends a length-prefixed string field.
pub(crate) fn put_string(
    dst: &mut BytesMut,
    field: &'static str,
    value: &str,
) -> Result<(), ProtocolError> {
    let length = u16::try_from(value.len()).map_err(|_| ProtocolError::FieldTooLong {
        field,
        length: value.len(),
    })?;
    dst.put_u16(length);
    dst.put_slice(value.as_bytes());
    Ok(())
}

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

    use super::*;
    use proptest::prelude::*;

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
        let spec = include_str!("../PROTOCOL.md");
        for (name, frame) in golden_examples() {
            let hex = to_hex(&encoded(&frame));
            assert!(
                spec.contains(&hex),
                "PROTOCOL.md lacks the bytes of {name}:\n{hex}"
            );
        }
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
        let error = encode_publish(&mut dst, 0, &long, None, &[], b"")
            .expect_err("subject longer than u16");
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
                            message: Message::encode(
                                &subject,
                                reply_to.as_deref(),
                                &headers,
                                &payload,
                            )
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
}

#[cfg(test)]
mod print_examples {
    /// `TERN_PRINT_EXAMPLES=1 cargo test -p tern-proto print_golden -- --nocapture`
    /// prints every example for pasting into PROTOCOL.md.
    #[test]
    fn print_golden_examples_on_request() {
        if std::env::var_os("TERN_PRINT_EXAMPLES").is_none() {
            return;
        }
        for (name, frame) in super::golden_examples() {
            let bytes = frame.to_bytes().expect("encodes");
            println!("{name}\n{:?}\n{}\n", frame, super::to_hex(&bytes));
        }
    }
}
