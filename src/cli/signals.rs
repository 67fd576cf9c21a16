//! Turning SIGTERM / SIGINT into a cancelled [`CancellationToken`], and SIGHUP into
//! a reload of the security files (the binary's concern: the broker library only
//! watches the token and offers the reload).

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on the first SIGTERM or SIGINT. A second signal during the drain
/// exits at once (exit code 130), for operators who do not want to wait.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        info!(signal, "shutdown requested");
        token.cancel();
        let signal = wait_for_signal().await;
        info!(signal, "second signal: exiting now");
        std::process::exit(130);
    });
}

/// Reloads TLS certificates, `AUTH_FILE` and the HTTP token on every SIGHUP.
pub fn reload_on_hangup(broker: std::sync::Arc<tern_broker::broker::Broker>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            info!("SIGHUP: reloading the security files");
            broker.reload_security();
        }
    });
    #[cfg(not(unix))]
    drop(broker);
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only wait for Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
