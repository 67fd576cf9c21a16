//! A connection on the TLS listener: TLS from the first byte. A plaintext client
//! (its first byte is not a TLS handshake record) is told `TLS_REQUIRED` in the
//! clear and closed, rather than left waiting; the TLS handshake must finish
//! within `HANDSHAKE_TIMEOUT_MS`; the session then runs over the TLS stream, with
//! the names of the client's verified certificate for `AUTH_FILE`. Handshakes in
//! progress hold a permit of their own (at most `MAX_CONNECTIONS` of them), so
//! connections that never finish one cannot pile up beyond the connection limit.

use std::net::SocketAddr;
use std::sync::Arc;

use tern_proto::{ErrorCode, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::broker::Broker;
use crate::security::tls::certificate_names;
use crate::security::TlsCell;
use crate::session;
use crate::transport::tls::TlsTcp;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves one connection accepted on a TLS listener.
pub(super) async fn serve_tls(
    tls: &TlsCell,
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let limit = broker.config().handshake_timeout;
    let failures = &broker.security().stats().tls_handshake_failures;
    let mut first = [0u8; 1];
    match timeout(limit, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => {
            failures.inc();
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        failures.inc();
        debug!(%peer, "plaintext client on the TLS port");
        let refusal = Frame::error(
            ErrorCode::TlsRequired,
            0,
            "this port speaks TLS (1.2 or 1.3) from the first byte; connect with TLS",
        );
        if let Ok(bytes) = refusal.to_bytes() {
            let _ = timeout(limit, async {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            })
            .await;
        }
        return;
    }
    let stream = match timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            failures.inc();
            debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            failures.inc();
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    drop(handshake);
    let names = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(certificate_names)
        .unwrap_or_default();
    session::serve_connection_as(TlsTcp(stream), peer, names, broker, shutdown).await;
}
