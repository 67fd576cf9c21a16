//! The reader's buffer: sized for the frames it receives, recycling the allocations
//! that delivered messages have released, and released when the connection idles.
//!
//! Delivered messages are slices of the read buffer's allocation (no copy per
//! message), so the reader cannot simply reuse its buffer: it needs a new allocation
//! whenever the current one is full, and a frame straddling the end of an
//! allocation is copied into the next. Three things keep that cheap:
//! - while large frames arrive (at least [`LARGE_FRAME_BYTES`]), a read stops at the
//!   end of the frame being received, so a large frame starts its own allocation and
//!   is never copied;
//! - the last few allocations are kept as spares and reused once the messages in
//!   them have been dropped, so a steady stream costs no allocation, no page faults
//!   and no returning of memory to the system per read;
//! - after [`IDLE_RELEASE_AFTER`] without anything to read, the spares and an empty
//!   buffer are released, so an idle connection holds no read buffer.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use tern_proto::codec::{self, ProtocolError};
use tern_proto::{Frame, LENGTH_PREFIX_BYTES};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::timeout;

use crate::client::IDLE_RELEASE_AFTER;

/// Room made for each read while frames are small.
const READ_BYTES: usize = 64 * 1024;

/// Frames at least this large are read one per allocation.
const LARGE_FRAME_BYTES: usize = 16 * 1024;

/// Allocations kept for reuse once their messages are dropped. A subscriber that
/// holds on to more messages than this makes the reader allocate anew.
const SPARE_BUFFERS: usize = 4;

/// A partial frame at most this long is moved into a spare allocation; a longer one
/// grows its own (it is being received into it).
const MOVABLE_PARTIAL_BYTES: usize = 4 * 1024;

/// Bytes read from the broker and not yet decoded, and the allocations to read into.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buffer: BytesMut,
    spares: VecDeque<BytesMut>,
    /// Length (with its prefix) of the last large frame received; 0 while frames are
    /// small.
    large_frame: usize,
    max_frame: u32,
    /// `buffer` is (part of) an allocation made for reading, worth keeping as a
    /// spare.
    allocated: bool,
}

impl ReadBuffer {
    /// Starts with what the handshake left over.
    pub(crate) fn new(leftover: BytesMut, max_frame: u32) -> Self {
        ReadBuffer {
            buffer: leftover,
            spares: VecDeque::new(),
            large_frame: 0,
            max_frame,
            allocated: false,
        }
    }

    /// The next complete frame buffered, if any.
    pub(crate) fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        codec::decode(&mut self.buffer, self.max_frame)
    }

    /// Reads once from the socket (after decoding everything buffered). Returns how
    /// many bytes were read; 0 means the broker closed the connection.
    pub(crate) async fn read_from(&mut self, socket: &mut OwnedReadHalf) -> std::io::Result<usize> {
        loop {
            let limit = self.make_room();
            match socket.try_read_buf(&mut (&mut self.buffer).limit(limit)) {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            if self.holds_memory() {
                match timeout(IDLE_RELEASE_AFTER, socket.readable()).await {
                    Ok(ready) => {
                        ready?;
                        continue;
                    }
                    Err(_) => self.release(),
                }
            }
            socket.readable().await?;
        }
    }

    /// Makes room for the next read and returns how much it may read. The frame at
    /// the front, partly received, says whether frames are large (reads stop at its
    /// end) or small (reads of [`READ_BYTES`]); between frames the last one decides.
    fn make_room(&mut self) -> usize {
        let mut rest = 0;
        if let Ok(Some(length)) = codec::peek_length(&self.buffer, self.max_frame) {
            let total = LENGTH_PREFIX_BYTES + length;
            self.large_frame = if total >= LARGE_FRAME_BYTES { total } else { 0 };
            rest = total.saturating_sub(self.buffer.len());
        }
        if self.large_frame == 0 {
            self.reserve(READ_BYTES);
            return usize::MAX;
        }
        let want = if rest > 0 {
            rest
        } else {
            // Between frames: expect one like the last.
            self.large_frame
                .saturating_sub(self.buffer.len())
                .max(LENGTH_PREFIX_BYTES)
        };
        self.reserve(want);
        want
    }

    /// Makes room for `additional` bytes: in the current allocation if it has room
    /// or its messages are gone, else in a spare whose messages are gone, else in a
    /// new allocation. The current one becomes a spare when it is left.
    fn reserve(&mut self, additional: usize) {
        if self.buffer.try_reclaim(additional) {
            return;
        }
        let partial = self.buffer.len();
        if partial > MOVABLE_PARTIAL_BYTES {
            self.buffer.reserve(additional);
            return;
        }
        let needed = partial + additional;
        let reusable = self
            .spares
            .iter_mut()
            .position(|spare| spare.try_reclaim(needed));
        let mut next = match reusable.and_then(|index| self.spares.remove(index)) {
            Some(spare) => spare,
            None => BytesMut::with_capacity(needed.max(READ_BYTES)),
        };
        next.extend_from_slice(&self.buffer);
        let mut left = std::mem::replace(&mut self.buffer, next);
        if std::mem::replace(&mut self.allocated, true) {
            left.clear();
            if self.spares.len() == SPARE_BUFFERS {
                self.spares.pop_front();
            }
            self.spares.push_back(left);
        }
    }

    fn holds_memory(&self) -> bool {
        !self.spares.is_empty() || (self.buffer.is_empty() && self.buffer.capacity() > 0)
    }

    /// Drops the spares, and the buffer if it holds no partial frame.
    fn release(&mut self) {
        self.spares.clear();
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
            self.allocated = false;
        }
        self.large_frame = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn deliver(payload_len: usize) -> Vec<u8> {
        let mut frame = BytesMut::new();
        let message = tern_proto::Message::new("a.b", vec![7; payload_len]).expect("valid");
        codec::encode_deliver(&mut frame, 1, 0, false, &message).expect("encodes");
        frame.to_vec()
    }

    /// Feeds bytes as a socket would, in reads of at most `chunk`, honouring the
    /// room and limit the buffer asks for; calls `take` with each payload decoded.
    fn feed(reader: &mut ReadBuffer, bytes: &[u8], chunk: usize, mut take: impl FnMut(Bytes)) {
        let mut position = 0;
        while position < bytes.len() {
            let limit = reader.make_room();
            let room = reader.buffer.capacity() - reader.buffer.len();
            let length = chunk.min(limit).min(room).min(bytes.len() - position);
            reader
                .buffer
                .extend_from_slice(&bytes[position..position + length]);
            position += length;
            while let Some(frame) = reader.decode().expect("valid frames") {
                match frame {
                    Frame::Deliver(deliver) => take(deliver.message.payload_bytes()),
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
    }

    #[test]
    fn small_and_large_frames_decode_whole_and_in_order() {
        let sizes = [10, 70_000, 3, 20_000, 20_000, 5, 65_536, 1];
        let stream: Vec<u8> = sizes.iter().flat_map(|&size| deliver(size)).collect();
        for chunk in [1, 7, 4096, 65_536, 1 << 20] {
            let mut reader = ReadBuffer::new(BytesMut::new(), 1 << 24);
            let mut lengths = Vec::new();
            feed(&mut reader, &stream, chunk, |payload| {
                lengths.push(payload.len())
            });
            assert_eq!(lengths, sizes, "chunk {chunk}");
        }
    }

    #[test]
    fn a_large_frame_is_read_into_its_own_allocation_and_reused_once_dropped() {
        let stream = deliver(64 * 1024).repeat(8);
        let mut reader = ReadBuffer::new(BytesMut::new(), 1 << 24);
        let mut seen = Vec::new();
        // Each payload is dropped at once (a fast subscriber): its allocation can be
        // reused.
        feed(&mut reader, &stream, usize::MAX, |payload| {
            seen.push(payload.as_ptr() as usize)
        });
        assert_eq!(seen.len(), 8);
        // Each frame is read into the front of the same allocation: recycled, not
        // made anew (and no frame was copied to a new allocation).
        let distinct: std::collections::HashSet<usize> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), 1, "distinct payload addresses");
    }

    #[test]
    fn spares_are_bounded_and_released() {
        let stream = deliver(32 * 1024).repeat(20);
        let mut reader = ReadBuffer::new(BytesMut::new(), 1 << 24);
        // Keep every message alive: nothing can be reused.
        let mut kept = Vec::new();
        feed(&mut reader, &stream, 1 << 20, |payload| kept.push(payload));
        assert_eq!(kept.len(), 20);
        assert!(reader.spares.len() <= SPARE_BUFFERS);
        reader.release();
        assert!(reader.spares.is_empty());
        assert_eq!(reader.buffer.capacity(), 0);
    }
}
