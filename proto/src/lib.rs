//! `tern-proto`: the Tern wire protocol, shared by the broker and every client.
//!
//! Without features, this crate does no I/O and has no async code (the feature
//! below adds a thin tokio adapter). It knows how to turn bytes into
//! [`Frame`]s and back, and which subjects, patterns and error codes are valid.
//! `PROTOCOL.md` next to this crate is the normative specification; the golden-byte
//! tests in [`codec`] pin the code to it.
//!
//! Modules:
//! - [`frame`] — every frame type and its fields.
//! - [`message`] — a published message, shared by broker and clients.
//! - [`opcode`] — the one-byte frame type identifiers.
//! - [`error_code`] — stable numeric error codes and whether each closes the connection.
//! - [`codec`] — the sans-IO encoder and incremental decoder.
//! - [`read_buffer`] — a connection's read buffer: adaptive, recycling, releasable.
//! - [`subject`] — subject, pattern and queue-name validation.
//! - feature `tokio-io` — `ReadBuffer::read_from`, reading any tokio `AsyncRead`.

pub mod codec;
pub mod error_code;
pub mod filter;
pub mod frame;
pub mod message;
pub mod opcode;
pub mod read_buffer;
pub mod subject;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
pub use codec::{decode, encode_deliver, encode_publish, ProtocolError};
pub use error_code::ErrorCode;
pub use filter::{Filter, FilterError};
pub use frame::{
    Deliver, DeliveryMode, ErrorFrame, Frame, Goodbye, Header, Hello, Publish, PublishError,
    QueueInfo, Role, Subscribe, SubscribeFiltered, Welcome,
};
pub use message::{Headers, Message};
pub use opcode::Opcode;
pub use read_buffer::ReadBuffer;
pub use subject::SubjectError;

/// The newest protocol version this crate speaks: 2 is version 1 plus
/// SUBSCRIBE_FILTERED (header filters) and `INVALID_FILTER`; nothing of version 1
/// changed. A client asks for it in HELLO and falls back to 1 if refused.
pub const PROTOCOL_VERSION: u16 = 2;

/// The version that introduced SUBSCRIBE_FILTERED.
pub const FILTERS_VERSION: u16 = 2;

/// Every protocol version this crate can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, PROTOCOL_VERSION];

/// Size of the big-endian length prefix that starts every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default upper bound for a frame's length prefix. NATS uses 1 MiB too: large enough
/// for any message that belongs on a broker, small enough that one connection can't
/// make the broker allocate much before it is rejected.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;
