//! Sans-IO encoding and incremental decoding of frames.
//!
//! Wire layout (see `PROTOCOL.md`): a 4-byte big-endian length `L` (the number of
//! bytes after the prefix, `1 <= L <= max_frame_bytes`), a 1-byte opcode, then the
//! fields. Integers are big-endian; a string is a `u16` byte length and UTF-8 bytes;
//! headers are a `u16` count of (name string, value string) pairs; a payload is the
//! rest of the frame.
//!
//! [`decode()`] consumes at most one frame from a buffer and returns `Ok(None)` until
//! a whole frame is buffered. An oversized length prefix is rejected before any
//! space is reserved for it. A frame whose body fails to parse is still consumed,
//! so the byte stream stays aligned and the caller decides whether to go on.
//!
//! - [`decode`](mod@decode) — the incremental decoder (one frame at a time);
//! - [`encode`](mod@encode) — the encoders, including the borrowed-field fast paths;
//! - [`golden`] — one example of every frame with its exact bytes, pinned to
//!   `PROTOCOL.md`.

pub mod decode;
pub mod encode;
pub mod golden;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_body, peek_length};
pub(crate) use encode::put_string;
pub use encode::{encode_deliver, encode_deliver_head, encode_publish, DELIVER_FIXED_BYTES};
pub use golden::{golden_examples, to_hex};

use crate::error_code::ErrorCode;
use crate::opcode::Opcode;

/// Bit 0 of DELIVER's flags byte: the message was delivered before.
pub const FLAG_REDELIVERED: u8 = 0b0000_0001;

/// Why bytes could not be turned into a frame, or a frame into bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
