//! The incremental decoder: [`decode`] consumes at most one frame and returns
//! `Ok(None)` until a whole frame is buffered; lengths are checked before anything
//! is reserved or sliced.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::{ProtocolError, FLAG_REDELIVERED};
use crate::frame::{
    Deliver, DeliveryMode, ErrorFrame, Frame, Goodbye, Hello, Publish, PublishError, QueueInfo,
    Role, Subscribe, SubscribeFiltered, Welcome,
};
use crate::message::Message;
use crate::opcode::Opcode;
use crate::LENGTH_PREFIX_BYTES;

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
            let subscribe = subscribe_fields(&mut body)?;
            body.end()?;
            Frame::Subscribe(subscribe)
        }
        Opcode::SubscribeFiltered => {
            let subscribe = subscribe_fields(&mut body)?;
            let filter = body.string("filter")?;
            body.end()?;
            Frame::SubscribeFiltered(SubscribeFiltered { subscribe, filter })
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
        Opcode::QueueList => {
            let request_id = body.u64("request_id")?;
            body.end()?;
            Frame::QueueList { request_id }
        }
        Opcode::QueuePurge => {
            let request_id = body.u64("request_id")?;
            let queue = body.string("queue")?;
            body.end()?;
            Frame::QueuePurge { request_id, queue }
        }
        Opcode::QueueDelete => {
            let request_id = body.u64("request_id")?;
            let queue = body.string("queue")?;
            let force = body.bool("force")?;
            body.end()?;
            Frame::QueueDelete {
                request_id,
                queue,
                force,
            }
        }
        Opcode::QueueInfo => {
            let request_id = body.u64("request_id")?;
            let name = body.string("name")?;
            let pattern = body.string("pattern")?;
            let ready = body.u64("ready")?;
            let unacked = body.u64("unacked")?;
            let consumers = body.u32("consumers")?;
            let bytes = body.u64("bytes")?;
            body.end()?;
            Frame::QueueInfo(QueueInfo {
                request_id,
                name,
                pattern,
                ready,
                unacked,
                consumers,
                bytes,
            })
        }
        Opcode::QueueOk => {
            let request_id = body.u64("request_id")?;
            let count = body.u64("count")?;
            body.end()?;
            Frame::QueueOk { request_id, count }
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

/// The fields SUBSCRIBE and SUBSCRIBE_FILTERED share.
fn subscribe_fields(body: &mut Body) -> Result<Subscribe, ProtocolError> {
    let sid = body.u32("sid")?;
    let mode_byte = body.u8("mode")?;
    let mode = match mode_byte {
        0 => None,
        other => Some(DeliveryMode::try_from(other).map_err(|value| body.invalid("mode", value))?),
    };
    let prefetch = body.u32("prefetch")?;
    let pattern = body.string("pattern")?;
    let queue = body.optional_string("queue")?;
    Ok(Subscribe {
        sid,
        mode,
        prefetch,
        pattern,
        queue,
    })
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
