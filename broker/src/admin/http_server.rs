//! The HTTP listener's accept loop, hardened: the endpoints are tiny, so every
//! connection serves one request (`Connection: close`) within
//! `HTTP_REQUEST_TIMEOUT_MS` — headers, body and response — and at most
//! `HTTP_MAX_CONNECTIONS` are open at once. At the cap, a new connection closes
//! the oldest open one (a stalled client, since a real request takes milliseconds),
//! so `/ready` and `/healthz` keep answering however many slow clients there are.
//! On stop every connection is closed at once: a stalled request cannot hold up
//! the exit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::stats::Stats;

/// Pause after a failed `accept` (out of file descriptors), so the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The open HTTP connections, oldest first, each with the token that closes it.
#[derive(Debug, Default)]
struct OpenConnections {
    next_id: u64,
    open: BTreeMap<u64, CancellationToken>,
}

type Shared = Arc<Mutex<OpenConnections>>;

fn lock(open: &Shared) -> MutexGuard<'_, OpenConnections> {
    open.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Serves `router` on `listener` until `stop` is cancelled, within the broker's
/// HTTP limits; then closes every connection and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    router: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let max_connections = broker.config().http_max_connections;
    let request_timeout = broker.config().http_request_timeout;
    let open: Shared = Arc::default();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "http accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let token = CancellationToken::new();
        let id = {
            let mut open = lock(&open);
            if open.open.len() >= max_connections {
                if let Some((_, oldest)) = open.open.pop_first() {
                    oldest.cancel();
                    Stats::add(&broker.stats().http_evicted, 1);
                }
            }
            let id = open.next_id;
            open.next_id += 1;
            open.open.insert(id, token.clone());
            id
        };
        connections.spawn(serve_one(
            stream,
            router.clone(),
            token,
            request_timeout,
            broker.clone(),
            open.clone(),
            id,
        ));
    }
    for token in lock(&open).open.values() {
        token.cancel();
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, one request, within `request_timeout`, unless `token` closes it
/// first.
async fn serve_one(
    stream: TcpStream,
    router: axum::Router,
    token: CancellationToken,
    request_timeout: Duration,
    broker: Arc<Broker>,
    open: Shared,
    id: u64,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .keep_alive(false);
    let serve = async {
        let service = TowerToHyperService::new(router);
        match broker.security().http_tls() {
            None => {
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            }
            // HTTPS (`HTTP_TLS`): the handshake counts against the request's time.
            Some(tls) => match tls.acceptor().accept(stream).await {
                Ok(stream) => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Err(error) => {
                    debug!(%error, "https handshake failed");
                    broker.security().stats().tls_handshake_failures.inc();
                    Ok(())
                }
            },
        }
    };
    tokio::select! {
        served = tokio::time::timeout(request_timeout, serve) => match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                if error.is_timeout() {
                    Stats::add(&broker.stats().http_timed_out, 1);
                }
                debug!(%error, "http connection ended with an error");
            }
            Err(_) => Stats::add(&broker.stats().http_timed_out, 1),
        },
        () = token.cancelled() => {}
    }
    lock(&open).open.remove(&id);
}
