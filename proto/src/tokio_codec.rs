//! A tokio-util [`Decoder`]/[`Encoder`] over the sans-IO codec, for clients that
//! want `Framed<TcpStream, FrameCodec>`.
//!
//! Note that a tokio-util `FramedRead` ends the stream after the first decode error;
//! a server that wants to skip frames with unknown opcodes should call
//! [`crate::codec::decode`] on its own buffer instead.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{decode, ProtocolError};
use crate::frame::Frame;

/// Frames ↔ bytes with a maximum accepted frame size.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

impl FrameCodec {
    /// A codec that rejects incoming frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameCodec { max_frame_bytes }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(crate::DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        decode(src, self.max_frame_bytes)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        frame.encode(dst)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        frame.encode(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_decodes_what_it_encodes() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (_, frame) in crate::codec::golden_examples() {
            codec.encode(&frame, &mut buf).expect("encodes");
        }
        for (name, frame) in crate::codec::golden_examples() {
            assert_eq!(codec.decode(&mut buf).expect(name), Some(frame), "{name}");
        }
        assert_eq!(codec.decode(&mut buf).expect("empty"), None);
    }
}
