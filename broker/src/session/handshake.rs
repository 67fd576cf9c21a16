//! The handshake: HELLO within `HANDSHAKE_TIMEOUT_MS`, answered by WELCOME (or an
//! ERROR saying what was wrong, then close); and the refusal of a connection over
//! `MAX_CONNECTIONS`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::transport::ReadSource;
use tern_proto::{ErrorCode, Frame, Role, Welcome, SUPPORTED_VERSIONS};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::close_reason::CloseReason;
use crate::config::env;
use crate::outbound::Outbox;
use crate::security::{AuthFailure, Authenticated};
use crate::stats::Stats;
use crate::transport::{FrameReader, ReadError};

/// The server software name sent in WELCOME.
pub const SERVER_NAME: &str = concat!("tern/", env!("CARGO_PKG_VERSION"));

/// How long a refused connection's writer gets to flush its ERROR.
pub(super) const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells a client over `MAX_CONNECTIONS` why, then closes.
pub(super) async fn refuse_connection<W: AsyncWrite + Unpin>(mut writer: W, broker: &Broker) {
    Stats::add(&broker.stats().connections_refused, 1);
    let max = broker.config().max_connections;
    let frame = Frame::error(
        ErrorCode::TooManyConnections,
        0,
        format!(
            "connection limit of {max} ({}) reached",
            env::MAX_CONNECTIONS
        ),
    );
    if let Ok(bytes) = frame.to_bytes() {
        let _ = timeout(FINAL_FLUSH_TIMEOUT, async {
            let _ = writer.write_all(&bytes).await;
            let _ = writer.shutdown().await;
        })
        .await;
    }
}

/// What the handshake agreed.
pub(super) struct Agreed {
    pub(super) role: Role,
    pub(super) version: u16,
    /// The `AUTH_FILE` user (`None` without an auth file).
    pub(super) authenticated: Option<Authenticated>,
}

/// Waits for HELLO (and, with `AUTH_FILE`, a credential naming a user) and
/// answers WELCOME, or explains what went wrong.
/// Returns only the role: the client's name is copied into the connection registry
/// and not kept otherwise, since it is a slice of the read buffer and holding it
/// would pin that buffer for the connection's whole life.
pub(super) async fn handshake<R: ReadSource>(
    reader: &mut FrameReader<R>,
    outbox: &Outbox,
    broker: &Broker,
    peer: SocketAddr,
    certificate_names: &[Box<str>],
) -> Result<Agreed, CloseReason> {
    let config = broker.config();
    let connection_id = outbox.connection_id();
    let reject = |code: ErrorCode, message: String| {
        outbox.push_control(Frame::error(code, 0, message));
        Err(CloseReason::ProtocolViolation(code))
    };
    let frame = match timeout(config.handshake_timeout, reader.next_frame()).await {
        Err(_elapsed) => {
            outbox.push_control(Frame::error(
                ErrorCode::HandshakeTimeout,
                0,
                format!(
                    "no HELLO within {} ms",
                    config.handshake_timeout.as_millis()
                ),
            ));
            return Err(CloseReason::HandshakeTimeout);
        }
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return Err(CloseReason::ClientClosed),
        // An unknown opcode before HELLO: the connection has not agreed on a
        // protocol, so it is closed (PROTOCOL.md §5.1), unlike after the handshake.
        Ok(Err(ReadError::Protocol(error))) if error.is_recoverable() => {
            return reject(
                ErrorCode::HandshakeRequired,
                format!("expected HELLO first, got {error}"),
            )
        }
        Ok(Err(ReadError::Protocol(error))) => {
            return reject(error.error_code(), error.to_string())
        }
        Ok(Err(ReadError::Io(_))) => return Err(CloseReason::ReadFailed),
    };
    let Frame::Hello(hello) = frame else {
        return reject(
            ErrorCode::HandshakeRequired,
            format!("expected HELLO first, got {:?}", frame.opcode()),
        );
    };
    if !SUPPORTED_VERSIONS.contains(&hello.version) {
        let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(ToString::to_string).collect();
        return reject(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; supported versions: {}",
                hello.version,
                supported.join(", ")
            ),
        );
    }
    let authenticated = match broker.security().auth() {
        None => None,
        // Boxed: the failure delay's timer would otherwise make every connection's
        // future bigger, with or without authentication.
        Some(auth) => {
            match Box::pin(auth.authenticate(peer.ip(), &hello.auth_token, certificate_names)).await
            {
                Ok(authenticated) => Some(authenticated),
                Err(failure) => {
                    broker.security().stats().count_auth_failure(failure);
                    warn!(connection = connection_id, %peer, reason = failure.as_str(), client = %hello.client_name, "authentication failed");
                    outbox.push_control(Frame::error(
                        ErrorCode::AuthenticationFailed,
                        0,
                        refusal_message(failure, peer),
                    ));
                    return Err(CloseReason::AuthenticationFailed);
                }
            }
        }
    };
    if let Some(authenticated) = &authenticated {
        outbox.connection().authenticate(
            &authenticated.user.name,
            authenticated.user.permissions.allow_responses,
        );
    }
    outbox.push_control(Frame::Welcome(Welcome {
        version: hello.version,
        connection_id,
        max_frame_bytes: config.max_frame_bytes,
        max_subject_length: tern_proto::subject::MAX_SUBJECT_LENGTH as u16,
        max_subscriptions: u32::try_from(config.max_consumers).unwrap_or(u32::MAX),
        default_prefetch: config.default_prefetch,
        server_name: SERVER_NAME.into(),
    }));
    outbox.connection().identify(&hello.client_name, hello.role);
    debug!(connection = connection_id, %peer, client = %hello.client_name, role = ?hello.role, user = authenticated.as_ref().map(|a| &*a.user.name), "client connected");
    Ok(Agreed {
        role: hello.role,
        version: hello.version,
        authenticated,
    })
}

/// What a client refused at authentication is told.
fn refusal_message(failure: AuthFailure, peer: SocketAddr) -> String {
    match failure {
        AuthFailure::Throttled => format!(
            "too many failed authentications from {} are in progress; try again later",
            peer.ip()
        ),
        AuthFailure::Missing => {
            "this broker requires a token (HELLO auth_token) or a client certificate".to_owned()
        }
        _ => "the token or client certificate names no user".to_owned(),
    }
}
