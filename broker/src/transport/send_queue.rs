//! How many bytes a TCP socket's send queue holds: written by us and not yet
//! acknowledged by the peer. The only `unsafe` code in the broker: one `ioctl`.

#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

/// `SIOCOUTQ` (equal to `TIOCOUTQ` on Linux) for `stream`, or `None` when the
/// kernel refuses. Elsewhere than on Linux it is always `None`: flow control then
/// sees progress only through the writer's own writes.
#[cfg(not(target_os = "linux"))]
pub(super) fn bytes(_stream: &TcpStream) -> Option<usize> {
    None
}

/// [`bytes`] for a socket known by its descriptor (the TCP socket under a TLS
/// session, which the TLS stream owns).
#[cfg(not(target_os = "linux"))]
pub(super) fn bytes_of_fd(_socket: std::os::fd::RawFd) -> Option<usize> {
    None
}

/// `SIOCOUTQ` (equal to `TIOCOUTQ` on Linux) for `stream`, or `None` when the
/// kernel refuses.
#[cfg(target_os = "linux")]
pub(super) fn bytes(stream: &TcpStream) -> Option<usize> {
    // `stream` is borrowed across the call, so its descriptor is its socket.
    bytes_of_fd(stream.as_raw_fd())
}

/// [`bytes`] for a socket known by its descriptor (the TCP socket under a TLS
/// session, which the TLS stream owns).
#[cfg(target_os = "linux")]
pub(super) fn bytes_of_fd(socket: std::os::fd::RawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes exactly one `c_int` through its third argument,
    // which points to `queued`: a live, aligned, writable `c_int` on this stack
    // frame. The call reads no memory of ours and keeps no pointer after it
    // returns. Whatever `socket` is (the callers pass a socket they keep open for
    // the call; a descriptor that is not a socket, or closed, makes the kernel fail
    // with ENOTTY or EBADF), the kernel writes nothing on error and returns -1:
    // memory safety does not depend on the descriptor.
    let result = unsafe { libc::ioctl(socket, libc::TIOCOUTQ, &mut queued) };
    if result == 0 {
        usize::try_from(queued).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Written bytes the peer has not read stay in the queue until acknowledged;
    /// on loopback they are acknowledged at once, so the queue empties.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_send_queue_of_a_connected_socket_is_readable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (_server, _) = listener.accept().await.expect("accept");
        assert_eq!(bytes(&client), Some(0));
        client.write_all(&[7u8; 1000]).await.expect("write");
        let queued = bytes(&client).expect("readable");
        assert!(queued <= 1000, "{queued}");
    }
}
