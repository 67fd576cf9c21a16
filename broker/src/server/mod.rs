//! The server: binds the listeners, accepts connections, and drains on shutdown.
//!
//! - this module — [`Server`]: bind, then `run` (the accept loop);
//! - [`drain`] — the shutdown sequence, step by step;
//! - `tls_accept.rs` — a connection on a TLS listener: plaintext refused, handshake, session.

pub mod drain;
mod tls_accept;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{env, Config};
use crate::readiness::ReadinessHold;
use crate::security::Security;
use crate::{admin, session};

/// Pause after a failed `accept` (typically out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Binds a listener with `backlog` (`LISTEN_BACKLOG`) pending connections:
/// `TcpListener::bind` would use 128, which made bursts of thousands of connections
/// wait for SYN retries. Address reuse is on, as `TcpListener::bind` sets it.
fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Startup failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {address} ({setting}): {source}")]
    Bind {
        /// `TCP_PORT` or `HTTP_PORT`.
        setting: &'static str,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    /// A security setting (TLS files, `AUTH_FILE`, `HTTP_AUTH_TOKEN_FILE`) is wrong.
    #[error("{0}")]
    Security(#[from] crate::security::SecurityError),
    /// The store `STORE_URL` names could not be opened.
    #[error("cannot open the store {url} (STORE_URL): {source}")]
    Store {
        /// The URL.
        url: String,
        /// Why.
        source: crate::store::StoreError,
    },
}

/// A broker with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    tcp: TcpListener,
    http: TcpListener,
    /// The broker's start-up hold, released once the accept loop runs: the broker
    /// then turns ready (unless another start-up step still holds it).
    listening: Option<ReadinessHold>,
}

impl Server {
    /// Binds the TCP and HTTP listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let tcp_address = SocketAddr::new(config.bind_addr, config.tcp_port);
        let http_address = SocketAddr::new(config.bind_addr, config.http_port);
        let tcp =
            listen(tcp_address, config.listen_backlog).map_err(|source| ServerError::Bind {
                setting: env::TCP_PORT,
                address: tcp_address,
                source,
            })?;
        let http =
            listen(http_address, config.listen_backlog).map_err(|source| ServerError::Bind {
                setting: env::HTTP_PORT,
                address: http_address,
                source,
            })?;
        let security = Security::from_config(&config)?;
        if security.auth().is_none() && !config.bind_addr.is_loopback() {
            warn!(
                bind = %config.bind_addr,
                "no {} is set: any client that reaches the port may publish and subscribe to everything",
                env::AUTH_FILE
            );
        }
        let url = config.store_url.to_string();
        // Recovery reads files: off the async workers.
        let broker = tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .map_err(|error| ServerError::Store {
                url: url.clone(),
                source: crate::store::StoreError::io(
                    std::path::Path::new(&url),
                    std::io::Error::other(error),
                ),
            })?
            .map_err(|source| ServerError::Store { url, source })?;
        let broker = Arc::new(broker.with_security(security));
        let listening = broker.take_startup_hold();
        Ok(Server {
            broker,
            tcp,
            http,
            listening,
        })
    }

    /// The bound protocol address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared broker state (for tests and embedding).
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains (see [`drain`]): `/ready`
    /// turns 503, the listener closes, every client gets GOODBYE and up to
    /// `SHUTDOWN_GRACE_SECS` to settle its acks. Returns once every connection is
    /// closed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Server {
            broker,
            tcp,
            http,
            listening,
        } = self;
        let tcp_address = tcp.local_addr().ok();
        let http_address = http.local_addr().ok();
        let http_stop = CancellationToken::new();
        let http_task = tokio::spawn(admin::serve(http, broker.clone(), http_stop.clone()));
        let housekeeping = tokio::spawn(broker.clone().run_housekeeping(http_stop.clone()));
        let watching = broker.clone();
        let watch_stop = http_stop.clone();
        let security_watch =
            tokio::spawn(async move { watching.watch_security_files(watch_stop).await });
        let sessions = TaskTracker::new();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(broker.config().max_connections));
        drop(listening);
        info!(
            tcp = ?tcp_address,
            http = ?http_address,
            delivery_mode = %broker.config().delivery_mode,
            tls = broker.security().tls().is_some(),
            auth = broker.security().auth().is_some(),
            "tern is ready"
        );
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // We batch our own writes; Nagle would only add latency.
                        let _ = stream.set_nodelay(true);
                        let broker = broker.clone();
                        let shutdown = shutdown.clone();
                        if broker.security().tls().is_some() {
                            // TLS handshakes in progress are bounded like
                            // connections: at MAX_CONNECTIONS more are closed at once.
                            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                                broker.security().stats().tls_handshake_failures.inc();
                                continue;
                            };
                            sessions.spawn(async move {
                                if let Some(tls) = broker.security().tls() {
                                    tls_accept::serve_tls(tls, stream, peer, broker.clone(), shutdown, handshake).await;
                                }
                            });
                        } else {
                            sessions.spawn(session::serve_connection(stream, peer, broker, shutdown));
                        }
                    }
                    Err(error) => {
                        warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        }
        drain::drain(&broker, &sessions, Some(tcp)).await;
        let closing = broker.clone();
        let _ = tokio::task::spawn_blocking(move || closing.close_store()).await;
        http_stop.cancel();
        let _ = housekeeping.await;
        let _ = security_watch.await;
        if let Ok(Err(error)) = http_task.await {
            return Err(ServerError::Http(error));
        }
        info!("shutdown complete");
        Ok(())
    }
}
