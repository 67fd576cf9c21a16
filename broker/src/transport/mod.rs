//! What a session runs over: any byte stream that splits into a read half and a
//! write half. TCP is one; TLS and WebSocket streams plug in through [`Stream`].
//!
//! - [`Transport`] — a stream the broker can serve a client on;
//! - [`reader`] — reading frames from the read half ([`FrameReader`]);
//! - `send_queue.rs` — how much a TCP socket's send queue holds (the one `unsafe`
//!   call in the broker, with its proof);
//! - [`tls`] — a TLS stream over TCP ([`tls::TlsTcp`]), whose writer still reads
//!   the TCP socket's send queue.
//!
//! TCP splits without a lock (`TcpStream::into_split`) and is read with a
//! non-blocking read and a readiness wait; a generic stream is split with
//! `tokio::io::split` (a lock per poll, uncontended: one reader, one writer) and read
//! through `AsyncRead` ([`ReadSource`]). Whatever the stream, an idle connection holds
//! no read buffer.

pub mod reader;
mod send_queue;
pub mod tls;

pub use reader::{FrameReader, ReadError};

pub use tern_proto::read_buffer::ReadSource;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long a writer (or a reader) must be idle before it releases its buffers. Not
/// at once: a writer that catches up with its publishers is idle many times a
/// second, and releasing and regrowing its buffers each time costs page faults.
pub const IDLE_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The write half of a transport, as the connection's writer task uses it.
pub trait TransportWriter: AsyncWrite + Unpin + Send + 'static {
    /// Bytes the kernel holds for this connection, written and not yet acknowledged
    /// by the peer (`SIOCOUTQ`), or `None` when the stream is not a socket. Flow
    /// control reads it to see a slow reader make progress (see `outbound`).
    fn send_queue_bytes(&self) -> Option<usize> {
        None
    }

    /// Whether written bytes may wait in the stream until it is flushed (a TLS
    /// stream's records); the writer then flushes after each batch.
    fn buffers_writes(&self) -> bool {
        true
    }
}

impl TransportWriter for OwnedWriteHalf {
    fn send_queue_bytes(&self) -> Option<usize> {
        send_queue::bytes(self.as_ref())
    }

    fn buffers_writes(&self) -> bool {
        false
    }
}

impl<S: AsyncWrite + Send + 'static> TransportWriter for WriteHalf<S> {}

/// A connected byte stream a session can serve.
pub trait Transport: Send + 'static {
    /// The read half: frames come from here.
    type Reader: ReadSource + 'static;
    /// The write half: the connection's writer task owns it.
    type Writer: TransportWriter;
    /// Splits the stream so reading and writing proceed independently.
    fn into_halves(self) -> (Self::Reader, Self::Writer);
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

/// Any other full-duplex stream (TLS, WebSocket, an in-memory pipe in tests).
#[derive(Debug)]
pub struct Stream<S>(pub S);

impl<S> Transport for Stream<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    type Reader = ReadHalf<S>;
    type Writer = WriteHalf<S>;

    fn into_halves(self) -> (ReadHalf<S>, WriteHalf<S>) {
        tokio::io::split(self.0)
    }
}
