//! `tern health [--path /healthz]`: asks a running broker's HTTP endpoint, exits 0
//! on `200 OK` and 1 otherwise. Made for container `HEALTHCHECK`s and exec probes in
//! images that carry no curl. `--token` sends the bearer token `/metrics` requires
//! (`HTTP_AUTH_TOKEN_FILE`); `--https` (with `--tls-ca`) speaks HTTPS (`HTTP_TLS`).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of a response that are read (the status line is all that matters).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Arguments of `tern health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Host of the broker's HTTP endpoint
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// HTTP port of the broker
    #[arg(long = "http-port", env = "HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Path to ask: /healthz (liveness) or /ready (readiness)
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// Seconds to wait for the answer
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Bearer token for endpoints that require one (/metrics with HTTP_AUTH_TOKEN_FILE)
    #[arg(long = "token", env = "TERN_HTTP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Speak HTTPS (a broker with HTTP_TLS)
    #[arg(long)]
    https: bool,
    /// CA certificates (PEM) that sign the broker's certificate (with --https; default: the system's)
    #[arg(long = "tls-ca", env = "TERN_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

/// Fetches the path and fails unless it answers 200.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| anyhow!("--timeout must be a positive number of seconds"))?;
    let (status, body) = tokio::time::timeout(wait, get(&args)).await.map_err(|_| {
        anyhow!(
            "no answer from {}:{} within {} s",
            args.host,
            args.http_port,
            args.timeout
        )
    })??;
    if status != 200 {
        bail!("{} answered {status}: {}", args.path, body.trim());
    }
    super::print_line(body.trim().as_bytes())?;
    Ok(())
}

/// One `GET` over HTTP/1.1 (or HTTPS) with `Connection: close`: returns the
/// status and body.
async fn get(args: &HealthArgs) -> anyhow::Result<(u16, String)> {
    let (host, port, path) = (args.host.as_str(), args.http_port, args.path.as_str());
    let stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let authorization = args
        .token
        .as_ref()
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Connection: close\r\n\r\n");
    let response = if args.https || args.tls_ca.is_some() {
        let tls = tern_client::TlsOptions {
            ca_file: args.tls_ca.clone(),
            ..Default::default()
        };
        let stream = tls
            .connect(&format!("{host}:{port}"), stream)
            .await
            .map_err(|error| anyhow!("{error}"))?;
        exchange(stream, &request).await?
    } else {
        exchange(stream, &request).await?
    };
    let text = String::from_utf8_lossy(&response);
    let text = text.as_ref();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {host}:{port}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Writes the request and reads the response (up to [`MAX_RESPONSE_BYTES`]).
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &str,
) -> anyhow::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    Ok(response)
}
