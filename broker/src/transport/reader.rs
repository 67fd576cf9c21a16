//! A connection's inbound side: reading bytes into a buffer and frames out of it.
//!
//! The read buffer ([`ReadBuffer`], shared with the SDK) adapts its reads to the
//! traffic, reads large frames into their own allocations and recycles them once
//! the messages in them have been delivered, and is released when the connection
//! idles (a busy connection's after [`IDLE_RELEASE_AFTER`]), so an idle connection
//! holds no read buffer.

use crate::transport::ReadSource;
use tern_proto::codec::ProtocolError;
use tern_proto::{Frame, ReadBuffer};

use super::IDLE_RELEASE_AFTER;

/// Reads frames from one client.
#[derive(Debug)]
pub struct FrameReader<R> {
    source: R,
    buffer: ReadBuffer,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl<R: ReadSource> FrameReader<R> {
    /// Wraps the read half of a connection.
    pub fn new(source: R, max_frame_bytes: u32) -> Self {
        FrameReader {
            source,
            buffer: ReadBuffer::new(max_frame_bytes),
        }
    }

    /// The next frame already buffered, without reading the socket.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.buffer.decode()
    }

    /// Reads more bytes from the socket. Returns how many; 0 means the peer closed.
    /// Cancel-safe: bytes are either in the buffer or still in the socket.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.buffer
            .read_from(&mut self.source, IDLE_RELEASE_AFTER)
            .await
    }

    /// The next frame, reading as needed; `Ok(None)` when the peer closed cleanly
    /// between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Bytes received but not yet consumed as frames.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }
}
