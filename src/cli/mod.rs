//! The `tern` command line: `serve` runs the broker; `pub`, `sub`, `req` and
//! `reply` are small clients built on `tern-client` only; `queue` administers
//! queues; `health` asks a running
//! broker's HTTP endpoint (for container health checks); `bench` measures a broker
//! (and `relay`, hidden, is the ceiling it compares against).
//!
//! `serve` is the only command that uses the broker library (`tern-broker`); the
//! clients use the SDK only.
//!
//! Client commands print one clear line on stderr and exit 1 on failure
//! (connection refused, no responders, timeout, refused publish).

mod auth;
pub mod bench;
mod health;
mod publish;
mod queue;
mod relay;
mod reply;
mod request;
pub mod serve;
mod signals;
mod subscribe;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tern_client::{Client, ClientOptions, ReconnectPolicy, Role};

/// Default broker address for client commands.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9080";

/// Tern: a small, fast message broker.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at startup; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (configured by environment variables or these flags).
    Serve(serve::ServeArgs),
    /// Publish MESSAGE, or each line of stdin as one message.
    Pub(publish::PubArgs),
    /// Print each message of a subscription on its own line.
    Sub(subscribe::SubArgs),
    /// Send a request and print the reply.
    Req(request::ReqArgs),
    /// Answer requests with RESPONSE, or echo them.
    Reply(reply::ReplyArgs),
    /// Administer queues: ls, purge NAME, delete NAME [--force].
    Queue(queue::QueueArgs),
    /// Make a token for AUTH_FILE: prints the token, then its token_sha256 line.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Check a running broker's /healthz (or --path /ready); exit 0 when it answers 200.
    Health(health::HealthArgs),
    /// Measure throughput, latency and delivery (pubsub, queue, req), like `nats bench`.
    Bench(bench::BenchArgs),
    /// Copy frames from one socket to another: the ceiling `tern bench --target relay://` measures.
    #[command(hide = true)]
    Relay(relay::RelayArgs),
}

/// Where client commands connect, and how they prove who they are.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// Broker address (host:port)
    #[arg(short = 's', long = "server", env = "TERN_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Token for a broker with AUTH_FILE
    #[arg(long = "token", env = "TERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS, trusting the CAs in this PEM file
    #[arg(long = "tls-ca", env = "TERN_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for brokers that require mutual TLS (implies TLS)
    #[arg(long = "tls-cert", env = "TERN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long = "tls-key", env = "TERN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Name the broker's certificate must carry (default: the host of --server)
    #[arg(long = "tls-server-name", env = "TERN_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Speak TLS, trusting the system's CAs
    #[arg(long = "tls")]
    pub tls: bool,
}

impl ServerArg {
    /// Client options with this token and TLS.
    pub fn apply(&self, mut options: ClientOptions) -> ClientOptions {
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        let wants_tls = self.tls
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_server_name.is_some();
        if wants_tls {
            let tls = tern_client::TlsOptions {
                ca_file: self.tls_ca.clone(),
                cert_file: self.tls_cert.clone(),
                key_file: self.tls_key.clone(),
                server_name: self.tls_server_name.clone(),
            };
            options = options.tls(tls);
        }
        options
    }
}

/// Runs a parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => return serve::run(args),
        Command::Pub(args) => block_on(publish::run(args)),
        Command::Sub(args) => block_on(subscribe::run(args)),
        Command::Req(args) => block_on(request::run(args)),
        Command::Reply(args) => block_on(reply::run(args)),
        Command::Queue(args) => block_on(queue::run(args)),
        Command::Health(args) => block_on(health::run(args)),
        Command::Auth(command) => auth::run(command),
        Command::Bench(args) => block_on_multi_thread(bench::run(args)),
        Command::Relay(args) => block_on(relay::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tern: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Like [`block_on`] on a runtime with one worker per core: benchmarks run many
/// connections at once.
fn block_on_multi_thread(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Connects a CLI client; fails fast instead of retrying the first connection.
async fn connect(
    server: &ServerArg,
    name: &str,
    role: Role,
    reconnect: bool,
) -> anyhow::Result<Client> {
    let options = server
        .apply(ClientOptions::default())
        .name(name)
        .role(role)
        .connect_timeout(Duration::from_secs(5))
        .reconnect(if reconnect {
            ReconnectPolicy::default()
        } else {
            ReconnectPolicy::disabled()
        });
    Client::connect_with(server.server.clone(), options)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// Parses `K=V`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

/// Writes a line to stdout and flushes it. A closed stdout (`| head`) is not an error.
fn print_line(bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let result = stdout
        .write_all(bytes)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error),
    }
}
