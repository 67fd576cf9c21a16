//! Encoded frames waiting for one write: a byte buffer, and for large payloads a
//! list of segments written with `writev` so the payload is not copied.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tern_proto::{codec, Frame, Message};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::flow_control::FlowControl;
use crate::transport::TransportWriter;

/// Payloads at least this large are not copied into the write buffer: the frame's
/// head goes in the buffer and the payload is written from the shared message by a
/// vectored write. Below it, one copy is cheaper than an extra segment.
pub const VECTORED_PAYLOAD_BYTES: usize = 16 * 1024;

/// Segments per vectored write (well under the kernel's `IOV_MAX` of 1024).
const SEGMENTS_PER_WRITE: usize = 64;

/// Why a write ended the connection.
pub(super) enum WriteFailure {
    Io(std::io::Error),
    Deadline,
}

/// Encoded frames: bytes, and for large payloads a list of segments (encoded heads
/// interleaved with shared payloads, written before `bytes`) sent with `writev`.
#[derive(Debug, Default)]
pub(super) struct WriteBuffer {
    pub(super) bytes: BytesMut,
    pub(super) segments: Vec<Bytes>,
    segment_bytes: usize,
}

impl WriteBuffer {
    pub(super) fn len(&self) -> usize {
        self.bytes.len() + self.segment_bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes a DELIVER of `message`.
    pub(super) fn delivery(
        &mut self,
        sid: u32,
        delivery_id: u64,
        redelivered: bool,
        message: &Message,
    ) -> Result<(), tern_proto::ProtocolError> {
        let payload = message.payload();
        if payload.len() < VECTORED_PAYLOAD_BYTES {
            return codec::encode_deliver(&mut self.bytes, sid, delivery_id, redelivered, message);
        }
        codec::encode_deliver_head(&mut self.bytes, sid, delivery_id, redelivered, message)?;
        let head = self.bytes.split().freeze();
        self.segment_bytes += head.len() + payload.len();
        self.segments.push(head);
        self.segments.push(message.payload_bytes());
        Ok(())
    }

    /// Encodes any other frame (a skipped frame is logged: only frames built by the
    /// broker from validated fields get here).
    pub(super) fn frame(&mut self, frame: &Frame) {
        if let Err(error) = frame.encode(&mut self.bytes) {
            warn!(%error, "could not encode an outbound frame; skipped");
        }
    }

    /// Writes everything: plain writes when there are no segments, otherwise
    /// vectored writes of up to [`SEGMENTS_PER_WRITE`] segments each. Each write may
    /// block for at most `deadline`; each one that writes something is progress
    /// for flow control.
    pub(super) async fn write_to<W: TransportWriter>(
        &mut self,
        socket: &mut W,
        flow: &FlowControl,
        deadline: Duration,
    ) -> Result<(), WriteFailure> {
        if self.segments.is_empty() {
            let mut position = 0;
            while position < self.bytes.len() {
                // One deadline per write call, however often it is retried for a
                // send-queue look.
                let until = tokio::time::Instant::now() + deadline;
                let written = loop {
                    tokio::select! {
                        biased;
                        written = progress(until, socket.write(&self.bytes[position..])) => break written?,
                        () = flow.send_queue_check_requested() => {}
                    }
                    look_at_send_queue(socket, flow);
                };
                position += written;
                flow.note_write(written);
            }
            return flush(socket, flow, deadline).await;
        }
        if !self.bytes.is_empty() {
            let tail = self.bytes.split().freeze();
            self.segments.push(tail);
        }
        let mut first = 0;
        while first < self.segments.len() {
            let slices: Vec<IoSlice<'_>> = self.segments[first..]
                .iter()
                .take(SEGMENTS_PER_WRITE)
                .map(|segment| IoSlice::new(segment))
                .collect();
            let until = tokio::time::Instant::now() + deadline;
            let mut written = loop {
                tokio::select! {
                    biased;
                    written = progress(until, socket.write_vectored(&slices)) => break written?,
                    () = flow.send_queue_check_requested() => {}
                }
                look_at_send_queue(socket, flow);
            };
            flow.note_write(written);
            while written > 0 {
                let segment = &mut self.segments[first];
                if written >= segment.len() {
                    written -= segment.len();
                    first += 1;
                } else {
                    segment.advance(written);
                    written = 0;
                }
            }
        }
        flush(socket, flow, deadline).await
    }

    /// Empties the buffer, keeping its capacity.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.segments.clear();
        self.segment_bytes = 0;
    }

    /// Every byte, in write order (segments, then bytes): what the client reads.
    #[cfg(test)]
    pub(super) fn contiguous(&self) -> BytesMut {
        let mut bytes = BytesMut::new();
        for segment in &self.segments {
            bytes.extend_from_slice(segment);
        }
        bytes.extend_from_slice(&self.bytes);
        bytes
    }
}

/// Flushes what the transport buffers itself (a TLS stream's pending records; a
/// no-op for TCP), within `deadline`.
/// While it waits, waiting publishers' requests to look at the send queue are
/// served as during a write: a TLS writer spends most of its blocked time here, its
/// records waiting for the socket.
async fn flush<W: TransportWriter>(
    socket: &mut W,
    flow: &FlowControl,
    deadline: Duration,
) -> Result<(), WriteFailure> {
    if !socket.buffers_writes() {
        return Ok(());
    }
    let until = tokio::time::Instant::now() + deadline;
    loop {
        tokio::select! {
            biased;
            flushed = tokio::time::timeout_at(until, socket.flush()) => return match flushed {
                Err(_) => Err(WriteFailure::Deadline),
                Ok(Err(error)) => Err(WriteFailure::Io(error)),
                Ok(Ok(())) => Ok(()),
            },
            () = flow.send_queue_check_requested() => {}
        }
        look_at_send_queue(socket, flow);
    }
}

/// Runs one write with a deadline; zero bytes written is an error.
/// A publisher waiting for this connection saw no write for a while: tells the flow
/// control how much the socket's send queue holds, so a shrinking queue counts as
/// progress. The write that was waiting is retried (a write that has not completed
/// has written nothing).
fn look_at_send_queue<W: TransportWriter>(socket: &W, flow: &FlowControl) {
    if let Some(queued) = socket.send_queue_bytes() {
        flow.observe_send_queue(queued);
    }
}

async fn progress(
    until: tokio::time::Instant,
    write: impl std::future::Future<Output = std::io::Result<usize>>,
) -> Result<usize, WriteFailure> {
    match tokio::time::timeout_at(until, write).await {
        Err(_) => Err(WriteFailure::Deadline),
        Ok(Err(error)) => Err(WriteFailure::Io(error)),
        Ok(Ok(0)) => Err(WriteFailure::Io(std::io::ErrorKind::WriteZero.into())),
        Ok(Ok(written)) => Ok(written),
    }
}
