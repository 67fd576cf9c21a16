//! The encoders: [`Frame::encode`] for any frame, and borrowed-field fast paths for
//! the per-message frames ([`encode_publish`], [`encode_deliver`],
//! [`encode_deliver_head`]) that build no intermediate [`Frame`].

use bytes::{BufMut, Bytes, BytesMut};

use super::{ProtocolError, FLAG_REDELIVERED};
use crate::frame::{Frame, Header, Subscribe};
use crate::message::{put_message_fields, Message};
use crate::opcode::Opcode;
use crate::LENGTH_PREFIX_BYTES;

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
        Frame::Subscribe(subscribe) => put_subscribe(dst, subscribe)?,
        Frame::SubscribeFiltered(filtered) => {
            put_subscribe(dst, &filtered.subscribe)?;
            put_string(dst, "filter", &filtered.filter)?;
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
        Frame::QueueList { request_id } => dst.put_u64(*request_id),
        Frame::QueuePurge { request_id, queue } => {
            dst.put_u64(*request_id);
            put_string(dst, "queue", queue)?;
        }
        Frame::QueueDelete {
            request_id,
            queue,
            force,
        } => {
            dst.put_u64(*request_id);
            put_string(dst, "queue", queue)?;
            dst.put_u8(u8::from(*force));
        }
        Frame::QueueInfo(info) => {
            dst.put_u64(info.request_id);
            put_string(dst, "name", &info.name)?;
            put_string(dst, "pattern", &info.pattern)?;
            dst.put_u64(info.ready);
            dst.put_u64(info.unacked);
            dst.put_u32(info.consumers);
            dst.put_u64(info.bytes);
        }
        Frame::QueueOk { request_id, count } => {
            dst.put_u64(*request_id);
            dst.put_u64(*count);
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

fn put_subscribe(dst: &mut BytesMut, subscribe: &Subscribe) -> Result<(), ProtocolError> {
    dst.put_u32(subscribe.sid);
    dst.put_u8(subscribe.mode.map_or(0, |mode| mode as u8));
    dst.put_u32(subscribe.prefetch);
    put_string(dst, "pattern", &subscribe.pattern)?;
    put_string(dst, "queue", subscribe.queue.as_deref().unwrap_or(""))
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
pub const DELIVER_FIXED_BYTES: usize = LENGTH_PREFIX_BYTES + 1 + 4 + 8 + 1;

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
