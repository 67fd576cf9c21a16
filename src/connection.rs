//! A connection's inbound side: reading bytes into a buffer and frames out of it.
//!
//! The read buffer is reused while the connection is busy and released once it has
//! been fully consumed and the connection is idle (a busy connection's after
//! [`IDLE_RELEASE_AFTER`]), so an idle connection holds no read buffer.

use bytes::BytesMut;
use tern_proto::codec::{self, ProtocolError};
use tern_proto::Frame;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::timeout;

use crate::outbox::IDLE_RELEASE_AFTER;

/// Smallest read: what a quiet connection (handshake, a subscribe, acks) needs.
const MIN_READ_BYTES: usize = 4 * 1024;

/// Largest read: a busy publisher's frames arrive in few syscalls.
const MAX_READ_BYTES: usize = 256 * 1024;

/// Reads frames from one client.
#[derive(Debug)]
pub struct FrameReader {
    socket: OwnedReadHalf,
    buffer: BytesMut,
    max_frame_bytes: u32,
    /// Adapts to the traffic, as nats-server's read buffer does: doubles while reads
    /// fill it, halves when they use little of it.
    read_size: usize,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameReader {
    /// Wraps the read half of a connection.
    pub fn new(socket: OwnedReadHalf, max_frame_bytes: u32) -> Self {
        FrameReader {
            socket,
            buffer: BytesMut::new(),
            max_frame_bytes,
            read_size: MIN_READ_BYTES,
        }
    }

    /// The next frame already buffered, without reading the socket.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, ProtocolError> {
        codec::decode(&mut self.buffer, self.max_frame_bytes)
    }

    /// Reads more bytes from the socket. Returns how many; 0 means the peer closed.
    /// Cancel-safe: bytes are either in the buffer or still in the socket.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        loop {
            // Grow by the read size rather than by the announced frame size, so a
            // client that announces a large frame and sends nothing pins no memory.
            // Once decoded frames have released it, the same allocation is reused.
            self.buffer.reserve(self.read_size);
            match self.socket.try_read_buf(&mut self.buffer) {
                Ok(read) => {
                    if read >= self.read_size {
                        self.read_size = (self.read_size * 2).min(MAX_READ_BYTES);
                    } else if read < self.read_size / 4 {
                        self.read_size = (self.read_size / 2).max(MIN_READ_BYTES);
                    }
                    return Ok(read);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.buffer.is_empty() && self.buffer.capacity() > 0 {
                        // Hold no buffer while waiting, so idle connections cost
                        // little memory. A busy one (its reads have grown) keeps it
                        // for a while first: it catches up many times a second, and
                        // releasing and regrowing each time costs page faults.
                        if self.read_size > MIN_READ_BYTES {
                            match timeout(IDLE_RELEASE_AFTER, self.socket.readable()).await {
                                Ok(ready) => {
                                    ready?;
                                    continue;
                                }
                                Err(_) => self.read_size = MIN_READ_BYTES,
                            }
                        }
                        self.buffer = BytesMut::new();
                    }
                    self.socket.readable().await?;
                }
                Err(error) => return Err(error),
            }
        }
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
