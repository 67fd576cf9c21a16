//! `tern health [--path /healthz]`: asks a running broker's HTTP endpoint, exits 0
//! on `200 OK` and 1 otherwise. Made for container `HEALTHCHECK`s and exec probes in
//! images that carry no curl.

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
}

/// Fetches the path and fails unless it answers 200.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| anyhow!("--timeout must be a positive number of seconds"))?;
    let (status, body) = tokio::time::timeout(wait, get(&args.host, args.http_port, &args.path))
        .await
        .map_err(|_| {
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

/// One `GET` over HTTP/1.1 with `Connection: close`: returns the status and body.
async fn get(host: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    let text = String::from_utf8_lossy(&response);
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
