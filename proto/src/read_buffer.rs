//! A reader's buffer for one connection, shared by the broker and the SDK: sized
//! for the frames arriving, recycling the allocations that decoded messages have
//! released, and releasable when the connection idles. It does no I/O: the caller
//! reads into [`ReadBuffer::read_target`] and reports with
//! [`ReadBuffer::record_read`], or (feature `tokio-io`) lets
//! `ReadBuffer::read_from` read any tokio `AsyncRead`.
//!
//! Decoded messages are slices of the buffer's allocation (no copy per message), so
//! the buffer cannot simply be reused: a new allocation is needed whenever the
//! current one is full and its messages are still held (queued for a subscriber,
//! say), and a frame straddling the end of an allocation is copied into the next.
//! Four things keep that cheap:
//! - while frames are small, reads adapt as nats-server's do: they double while they
//!   fill the room given ([`MIN_READ_BYTES`] to [`MAX_READ_BYTES`] by default) and
//!   halve when they use little of it, so a quiet connection uses little memory and
//!   a busy one few syscalls;
//! - while large frames arrive (at least [`LARGE_FRAME_BYTES`]), allocations are
//!   sized in whole frames like the last one (as many as fit in the largest read) and
//!   a read stops at the end of the last frame that fits, so a large frame is never
//!   split across allocations and copied, and alike frames arrive several per read;
//! - the allocations left behind are kept as spares, up to [`SPARE_BYTES`] of them,
//!   and reused once the messages in them have been dropped, so a steady stream
//!   costs no allocation, no page faults and no returning of memory to the system
//!   per read, even while many of its messages wait to be delivered;
//! - [`ReadBuffer::release`] drops the spares and an empty buffer; callers release at
//!   once when a quiet connection has nothing to read, and after a while idle when a
//!   busy one has nothing to read ([`ReadBuffer::is_busy`]), so an idle connection
//!   holds no read buffer.
//!
//! Memory a peer can pin: the room given for a frame grows with what has been
//! received of it, never by more than the larger of the bytes received and the read
//! size, so announcing a large frame and sending little pins little.

use std::collections::VecDeque;

use bytes::buf::Limit;
use bytes::{BufMut, BytesMut};

use crate::codec::{self, ProtocolError};
use crate::{Frame, LENGTH_PREFIX_BYTES};

/// Smallest read (and the first): what a quiet connection needs.
pub const MIN_READ_BYTES: usize = 4 * 1024;

/// Default largest read while frames are small: a busy connection's frames arrive
/// in few syscalls. [`ReadBuffer::with_max_read`] sets another.
pub const MAX_READ_BYTES: usize = 256 * 1024;

/// Frames at least this large are read whole: into allocations sized in whole
/// frames, by reads that end on frame boundaries.
pub const LARGE_FRAME_BYTES: usize = 16 * 1024;

/// Default bytes of allocations kept for reuse once their messages are dropped
/// ([`ReadBuffer::with_spare_bytes`] sets another): as much as a
/// broker subscriber's outbox holds before its publishers pause (4 MiB), so a
/// publisher feeding a subscriber that lags by that much still reads into recycled
/// memory. Messages held longer (a consumer keeping them, a deeper queue) make the
/// reader allocate anew. Why this size, as measured:
/// `benches/results/read-buffer-sizing.md`.
pub const SPARE_BYTES: usize = 4 * 1024 * 1024;

/// A partial frame at most this long is moved into a spare allocation; a longer one
/// grows its own (it is being received into it).
const MOVABLE_PARTIAL_BYTES: usize = 4 * 1024;

/// Bytes received and not yet decoded, and the allocations to read into.
#[derive(Debug)]
pub struct ReadBuffer {
    buffer: BytesMut,
    /// Allocations left behind, oldest first, each with its size.
    spares: VecDeque<(BytesMut, usize)>,
    /// Sum of the spares' sizes, at most `max_spare_bytes`.
    spare_bytes: usize,
    max_spare_bytes: usize,
    /// Length (with its prefix) of the last large frame received; 0 while frames are
    /// small.
    large_frame: usize,
    /// Room given to the next read while frames are small.
    read_size: usize,
    /// Largest `read_size`.
    max_read: usize,
    max_frame_bytes: u32,
    /// Size of the allocation `buffer` is part of when it was made for reading
    /// (worth keeping as a spare); 0 otherwise.
    allocation: usize,
}

impl ReadBuffer {
    /// An empty buffer that accepts frames up to `max_frame_bytes` (the length
    /// prefix's value). Allocates nothing until the first read.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self::with_leftover(BytesMut::new(), max_frame_bytes)
    }

    /// A buffer starting with bytes already received (what a handshake read past
    /// its own frame).
    pub fn with_leftover(leftover: BytesMut, max_frame_bytes: u32) -> Self {
        ReadBuffer {
            buffer: leftover,
            spares: VecDeque::new(),
            spare_bytes: 0,
            max_spare_bytes: SPARE_BYTES,
            large_frame: 0,
            read_size: MIN_READ_BYTES,
            max_read: MAX_READ_BYTES,
            max_frame_bytes,
            allocation: 0,
        }
    }

    /// Caps reads of small frames at `max_read` bytes (at least [`MIN_READ_BYTES`])
    /// instead of [`MAX_READ_BYTES`]. A reader whose messages wait for a slower
    /// consumer pins allocations of this size, so smaller ones keep its memory (and
    /// its cache footprint) smaller, at the cost of more reads. Large frames are
    /// still read up to [`MAX_READ_BYTES`] at a time.
    pub fn with_max_read(mut self, max_read: usize) -> Self {
        self.max_read = max_read.max(MIN_READ_BYTES);
        self
    }

    /// Keeps at most `spare_bytes` of spare allocations instead of [`SPARE_BYTES`].
    pub fn with_spare_bytes(mut self, spare_bytes: usize) -> Self {
        self.max_spare_bytes = spare_bytes;
        self
    }

    /// The next complete frame buffered, if any.
    pub fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        codec::decode(&mut self.buffer, self.max_frame_bytes)
    }

    /// Makes room for the next read and returns where to read: the buffer, limited
    /// to what this read may take. Pass it to `try_read_buf` (or any
    /// [`BufMut`] writer), then call [`ReadBuffer::record_read`].
    pub fn read_target(&mut self) -> Limit<&mut BytesMut> {
        let limit = self.make_room();
        (&mut self.buffer).limit(limit)
    }

    /// Reports a read of `read` bytes into [`ReadBuffer::read_target`], so the next
    /// read's room adapts to the traffic.
    pub fn record_read(&mut self, read: usize) {
        if self.large_frame > 0 {
            return;
        }
        if read >= self.read_size {
            self.read_size = (self.read_size * 2).min(self.max_read);
        } else if read < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ_BYTES);
        }
    }

    /// Bytes received and not yet decoded (a partial frame, between reads).
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether no bytes are waiting to be decoded.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Whether traffic has been heavy lately (reads grew, or frames are large): a
    /// caller with nothing to read should keep the memory a while before
    /// [`ReadBuffer::release`], as such a connection catches up many times a
    /// second and releasing each time costs page faults.
    pub fn is_busy(&self) -> bool {
        self.read_size > MIN_READ_BYTES || self.large_frame > 0
    }

    /// Whether [`ReadBuffer::release`] would free anything.
    pub fn holds_memory(&self) -> bool {
        !self.spares.is_empty() || (self.buffer.is_empty() && self.buffer.capacity() > 0)
    }

    /// Drops the spares, and the buffer if it holds no partial frame; reads start
    /// small again.
    pub fn release(&mut self) {
        self.spares.clear();
        self.spare_bytes = 0;
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
            self.allocation = 0;
        }
        self.large_frame = 0;
        self.read_size = MIN_READ_BYTES;
    }

    /// Reads once from `source` into the buffer (decode everything buffered first).
    /// Returns how many bytes were read; 0 means the peer closed. While nothing
    /// arrives between frames, releases the buffer's memory: at once if the
    /// connection is quiet, after `idle_release_after` if it is busy
    /// ([`ReadBuffer::is_busy`]), so an idle connection holds no read buffer, whatever
    /// the source ([`ReadSource`]: a TCP socket, a TLS stream, a pipe).
    /// Cancel-safe: bytes are either in the buffer or still in the source.
    #[cfg(feature = "tokio-io")]
    pub async fn read_from<S: ReadSource>(
        &mut self,
        source: &mut S,
        idle_release_after: std::time::Duration,
    ) -> std::io::Result<usize> {
        source.read_into(self, idle_release_after).await
    }

    /// [`ReadBuffer::read_from`] for a TCP socket: a non-blocking read first, then
    /// a wait for readability that takes no read buffer. `try_read` does not spend
    /// tokio's cooperative budget, so a busy socket is read without yielding.
    #[cfg(feature = "tokio-io")]
    async fn read_from_socket(
        &mut self,
        socket: &mut tokio::net::tcp::OwnedReadHalf,
        idle_release_after: std::time::Duration,
    ) -> std::io::Result<usize> {
        loop {
            match socket.try_read_buf(&mut self.read_target()) {
                Ok(read) => {
                    self.record_read(read);
                    return Ok(read);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            // With a partial frame buffered, more is on its way: just wait (a timer
            // per wait costs a busy connection measurably).
            if self.is_empty() && self.holds_memory() {
                if self.is_busy() {
                    match tokio::time::timeout(idle_release_after, socket.readable()).await {
                        Ok(ready) => {
                            ready?;
                            continue;
                        }
                        Err(_) => self.release(),
                    }
                } else {
                    self.release();
                }
            }
            socket.readable().await?;
        }
    }

    /// [`ReadBuffer::read_from`] for any other stream, which cannot be asked whether
    /// it is readable without reading: poll a read; while it is pending, release
    /// the buffer as above (the stream wakes the task when bytes arrive).
    #[cfg(feature = "tokio-io")]
    async fn read_from_stream<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        source: &mut S,
        idle_release_after: std::time::Duration,
    ) -> std::io::Result<usize> {
        use std::future::Future;
        use std::task::Poll;
        // Armed only when a busy connection waits between frames.
        let mut idle_timer = std::pin::pin!(None::<tokio::time::Sleep>);
        std::future::poll_fn(|context| {
            if let Poll::Ready(read) = self.poll_read(source, context) {
                return Poll::Ready(read);
            }
            // Nothing to read (the source will wake us). With a partial frame
            // buffered, more is on its way: just wait.
            if self.is_empty() && self.holds_memory() {
                if !self.is_busy() {
                    self.release();
                } else {
                    if idle_timer.is_none() {
                        idle_timer.set(Some(tokio::time::sleep(idle_release_after)));
                    }
                    if let Some(timer) = idle_timer.as_mut().as_pin_mut() {
                        if timer.poll(context).is_ready() {
                            self.release();
                            idle_timer.set(None);
                        }
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// One read attempt into the buffer's read target.
    #[cfg(feature = "tokio-io")]
    fn poll_read<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        source: &mut S,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = tokio_util::io::poll_read_buf(
            std::pin::Pin::new(source),
            context,
            &mut self.read_target(),
        );
        if let std::task::Poll::Ready(Ok(read)) = poll {
            self.record_read(read);
        }
        poll
    }

    /// Makes room for the next read and returns how much it may read. The frame at
    /// the front, partly received, says whether frames are large (reads end on frame
    /// boundaries) or small (reads of the adaptive size); between frames the last
    /// one decides.
    fn make_room(&mut self) -> usize {
        let mut rest = 0;
        if let Ok(Some(length)) = codec::peek_length(&self.buffer, self.max_frame_bytes) {
            let total = LENGTH_PREFIX_BYTES + length;
            self.large_frame = if total >= LARGE_FRAME_BYTES { total } else { 0 };
            rest = total.saturating_sub(self.buffer.len());
        }
        if self.large_frame == 0 {
            self.reserve(self.read_size);
            return usize::MAX;
        }
        let frame = self.large_frame;
        if rest > 0 {
            // Grow with what has arrived, so an announced length alone pins little;
            // room the allocation already has is used whole.
            let room = self.buffer.capacity() - self.buffer.len();
            let want = rest.min(self.buffer.len().max(self.read_size).max(room));
            self.reserve(want);
            if want < rest {
                return want;
            }
        } else {
            // Between frames: expect frames like the last (which did arrive), as
            // many as a largest read holds.
            let size = large_allocation(frame).unwrap_or(frame);
            self.reserve(size.saturating_sub(self.buffer.len()));
        }
        let want = rest.max(frame.saturating_sub(self.buffer.len()));
        // Then as many frames like the last as the allocation has room for, so a
        // read ends on a frame boundary when frames are alike, and a busy stream of
        // them takes one syscall per allocation rather than per frame.
        let room = self.buffer.capacity() - self.buffer.len();
        want + (room - want) / frame * frame
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
            // Grown in place, or moved to a new allocation this large.
            self.allocation = self.allocation.max(self.buffer.capacity());
            return;
        }
        let needed = partial + additional;
        // Small frames: the newest free spare, still in the CPU's caches (the
        // oldest would cycle reads through all of them). Large frames: the oldest,
        // most likely free after one check, while the newest are still queued; a
        // large frame is no warmer in cache than any other.
        let free = |(spare, _): &mut (BytesMut, usize)| spare.try_reclaim(needed);
        let reusable = if self.large_frame == 0 {
            self.spares.iter_mut().rposition(free)
        } else {
            self.spares.iter_mut().position(free)
        };
        let (mut next, size) = match reusable.and_then(|index| self.spares.remove(index)) {
            Some((spare, size)) => {
                self.spare_bytes -= size;
                (spare, size)
            }
            None => {
                // While frames are small, every allocation is one size, with room
                // for any partial frame moved into it: a spare can then always be
                // reused (one sized to what it first needed could be too small by
                // the length of a partial frame, and never be).
                let size = match large_allocation(self.large_frame) {
                    Some(size) => needed.max(size),
                    None => needed.max(self.read_size + MOVABLE_PARTIAL_BYTES),
                };
                (BytesMut::with_capacity(size), size)
            }
        };
        next.extend_from_slice(&self.buffer);
        let mut left = std::mem::replace(&mut self.buffer, next);
        let left_size = std::mem::replace(&mut self.allocation, size);
        if left_size > 0 {
            left.clear();
            self.spares.push_back((left, left_size));
            self.spare_bytes += left_size;
            while self.spare_bytes > self.max_spare_bytes {
                match self.spares.pop_front() {
                    Some((_, size)) => self.spare_bytes -= size,
                    None => break,
                }
            }
        }
    }
}

/// Size of an allocation for large frames of `frame` bytes: as many as a largest
/// read holds, at least one. `None` while frames are small (`frame` is 0).
fn large_allocation(frame: usize) -> Option<usize> {
    MAX_READ_BYTES
        .checked_div(frame)
        .map(|frames| frames.max(1) * frame)
}

/// A byte stream a [`ReadBuffer`] reads from. TCP sockets are read with a
/// non-blocking read and a readiness wait; any other stream (TLS, an in-memory pipe,
/// a WebSocket adapter) through `AsyncRead`, wrapped by `tokio::io::split`'s
/// `ReadHalf` or implemented for it directly.
#[cfg(feature = "tokio-io")]
pub trait ReadSource: tokio::io::AsyncRead + Unpin + Send {
    /// Reads once into `buffer`, as [`ReadBuffer::read_from`] describes.
    fn read_into<'a>(
        &'a mut self,
        buffer: &'a mut ReadBuffer,
        idle_release_after: std::time::Duration,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

#[cfg(feature = "tokio-io")]
impl ReadSource for tokio::net::tcp::OwnedReadHalf {
    fn read_into<'a>(
        &'a mut self,
        buffer: &'a mut ReadBuffer,
        idle_release_after: std::time::Duration,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
        buffer.read_from_socket(self, idle_release_after)
    }
}

#[cfg(feature = "tokio-io")]
impl<S: tokio::io::AsyncRead + Send> ReadSource for tokio::io::ReadHalf<S> {
    fn read_into<'a>(
        &'a mut self,
        buffer: &'a mut ReadBuffer,
        idle_release_after: std::time::Duration,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
        buffer.read_from_stream(self, idle_release_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, Bytes, Message};

    fn deliver(payload_len: usize) -> Vec<u8> {
        let mut frame = BytesMut::new();
        let message = Message::new("a.b", vec![7; payload_len]).expect("valid");
        codec::encode_deliver(&mut frame, 1, 0, false, &message).expect("encodes");
        frame.to_vec()
    }

    /// Reads as a socket would: at most `chunk` bytes, within the room and limit the
    /// buffer gives.
    fn read(reader: &mut ReadBuffer, bytes: &[u8], chunk: usize) -> usize {
        let mut target = reader.read_target();
        let length = chunk.min(target.remaining_mut()).min(bytes.len());
        let room = target.get_ref().capacity() - target.get_ref().len();
        let length = length.min(room);
        target.put_slice(&bytes[..length]);
        reader.record_read(length);
        length
    }

    /// Feeds bytes in reads of at most `chunk`; calls `take` with each payload
    /// decoded.
    fn feed(reader: &mut ReadBuffer, bytes: &[u8], chunk: usize, mut take: impl FnMut(Bytes)) {
        let mut position = 0;
        while position < bytes.len() {
            position += read(reader, &bytes[position..], chunk);
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
            let mut reader = ReadBuffer::new(1 << 24);
            let mut lengths = Vec::new();
            feed(&mut reader, &stream, chunk, |payload| {
                lengths.push(payload.len())
            });
            assert_eq!(lengths, sizes, "chunk {chunk}");
        }
    }

    #[test]
    fn leftover_bytes_are_decoded_first() {
        let first = deliver(5);
        let second = deliver(9);
        let mut reader = ReadBuffer::with_leftover(BytesMut::from(&first[..3]), 1 << 20);
        let mut lengths = Vec::new();
        let stream = [&first[3..], &second[..]].concat();
        feed(&mut reader, &stream, 1 << 20, |payload| {
            lengths.push(payload.len())
        });
        assert_eq!(lengths, [5, 9]);
    }

    #[test]
    fn alike_large_frames_are_read_whole_into_recycled_allocations() {
        let frame = deliver(64 * 1024);
        let stream = frame.repeat(20);
        let per_read = MAX_READ_BYTES / frame.len();
        let mut reader = ReadBuffer::new(1 << 24);
        let mut position = 0;
        let mut addresses = Vec::new();
        let mut reads_after_first = 0;
        while position < stream.len() {
            if !addresses.is_empty() {
                reads_after_first += 1;
            }
            position += read(&mut reader, &stream[position..], usize::MAX);
            // Each payload is dropped at once (a fast consumer): its allocation can
            // be reused.
            while let Some(Frame::Deliver(deliver)) = reader.decode().expect("valid") {
                addresses.push(deliver.message.payload().as_ptr() as usize);
            }
            if !addresses.is_empty() {
                // Once the first frame is in, every read ends on a frame boundary:
                // no frame is split across allocations (and copied).
                assert!(reader.is_empty(), "read ended inside a frame");
            }
        }
        assert_eq!(addresses.len(), 20);
        // Several frames per read.
        assert!(
            reads_after_first <= 19usize.div_ceil(per_read),
            "{reads_after_first} reads"
        );
        // After the first frame, one allocation, read into slot by slot: recycled,
        // not made anew.
        let distinct: std::collections::HashSet<usize> = addresses[1..].iter().copied().collect();
        assert!(distinct.len() <= per_read, "{} addresses", distinct.len());
    }

    #[test]
    fn spares_are_bounded_and_released() {
        let count = 2 * SPARE_BYTES / (32 * 1024);
        let stream = deliver(32 * 1024).repeat(count);
        let mut reader = ReadBuffer::new(1 << 24);
        // Keep every message alive: nothing can be reused.
        let mut kept = Vec::new();
        feed(&mut reader, &stream, 1 << 20, |payload| kept.push(payload));
        assert_eq!(kept.len(), count);
        let sizes: usize = reader.spares.iter().map(|(_, size)| size).sum();
        assert_eq!(sizes, reader.spare_bytes);
        assert!(reader.spare_bytes <= SPARE_BYTES);
        assert!(reader.spare_bytes > SPARE_BYTES / 2);
        assert!(reader.is_busy());
        assert!(reader.holds_memory());
        reader.release();
        assert!(reader.spares.is_empty());
        assert_eq!(reader.buffer.capacity(), 0);
        assert!(!reader.is_busy());
    }

    #[test]
    fn reads_grow_while_they_fill_and_shrink_when_quiet() {
        let mut reader = ReadBuffer::new(1 << 20);
        let frame = deliver(100);
        let small = frame.repeat(10_000);
        let mut position = 0;
        for _ in 0..8 {
            position += read(&mut reader, &small[position..], usize::MAX);
            while reader.decode().expect("valid").is_some() {}
        }
        assert_eq!(reader.read_size, MAX_READ_BYTES);
        // Finish the frame in progress.
        let boundary = position.div_ceil(frame.len()) * frame.len();
        while position < boundary {
            position += read(&mut reader, &small[position..boundary], usize::MAX);
        }
        while reader.decode().expect("valid").is_some() {}
        assert!(reader.is_empty());
        assert!(reader.is_busy());
        for _ in 0..8 {
            read(&mut reader, &deliver(1), usize::MAX);
            while reader.decode().expect("valid").is_some() {}
        }
        assert_eq!(reader.read_size, MIN_READ_BYTES);
        assert!(!reader.is_busy());
    }

    #[test]
    fn an_announced_length_alone_pins_little_memory() {
        let mut reader = ReadBuffer::new(1 << 24);
        // A frame announcing 16 MiB, of which only the prefix and 10 bytes arrive.
        let mut head = (1u32 << 24).to_be_bytes().to_vec();
        head.extend_from_slice(&[0; 10]);
        read(&mut reader, &head, usize::MAX);
        assert!(reader.decode().expect("valid so far").is_none());
        let limit = reader.read_target().remaining_mut();
        assert!(limit <= 2 * MIN_READ_BYTES, "limit {limit}");
        assert!(reader.buffer.capacity() <= 2 * MIN_READ_BYTES);
    }
}
