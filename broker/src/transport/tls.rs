//! A TLS connection over TCP as a [`Transport`]: split with `tokio::io::split`, and
//! with a writer that can still read the TCP socket's send queue, so flow control
//! sees a slow TLS reader make progress exactly as it sees a plaintext one.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{send_queue, Transport, TransportWriter};

/// A server-side TLS stream over TCP, handshake done.
#[derive(Debug)]
pub struct TlsTcp(pub TlsStream<TcpStream>);

/// The write half of a [`TlsTcp`].
#[derive(Debug)]
pub struct TlsWriter {
    half: WriteHalf<TlsStream<TcpStream>>,
    /// The TCP socket under the TLS session. It stays open while this half lives
    /// (the half owns a share of the stream), and it is only ever passed to the
    /// send-queue query.
    socket: Option<std::os::fd::RawFd>,
}

impl Transport for TlsTcp {
    type Reader = ReadHalf<TlsStream<TcpStream>>;
    type Writer = TlsWriter;

    fn into_halves(self) -> (Self::Reader, TlsWriter) {
        use std::os::fd::AsRawFd;
        let socket = Some(self.0.get_ref().0.as_raw_fd());
        let (reader, half) = tokio::io::split(self.0);
        (reader, TlsWriter { half, socket })
    }
}

impl TransportWriter for TlsWriter {
    fn send_queue_bytes(&self) -> Option<usize> {
        self.socket.and_then(send_queue::bytes_of_fd)
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}
