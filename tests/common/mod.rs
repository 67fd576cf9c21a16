//! Shared test harness: a real broker on ephemeral loopback ports, a raw-frame
//! client that pins the protocol, and polling helpers (no sleeps as sync).
#![allow(dead_code, missing_docs)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tern_broker::broker::Broker;
use tern_broker::{Config, Server};
use tern_proto::{
    codec, DeliveryMode, ErrorCode, Frame, Hello, Message, Publish, Role, Subscribe, Welcome,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long any single expectation may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A broker running inside the test's runtime on 127.0.0.1:0. Stops on drop.
pub struct TestBroker {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub broker: Arc<Broker>,
    pub stop: CancellationToken,
    task: Option<JoinHandle<Result<(), tern_broker::ServerError>>>,
}

/// The configuration tests start from: loopback, port 0, short timeouts.
pub fn test_config() -> Config {
    Config {
        bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tcp_port: 0,
        http_port: 0,
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = test_config();
        configure(&mut config);
        TestBroker::from_config(config).await
    }

    pub async fn from_config(config: Config) -> TestBroker {
        let server = Server::bind(config).await.expect("bind loopback listeners");
        let (tcp, http, broker) = (server.tcp_addr(), server.http_addr(), server.broker());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        wait_until("broker ready", || broker.is_ready()).await;
        TestBroker {
            tcp,
            http,
            broker,
            stop,
            task: Some(task),
        }
    }

    pub fn address(&self) -> String {
        self.tcp.to_string()
    }

    /// Begins shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("broker stops within its grace period")
                .expect("broker task")
                .expect("clean shutdown");
        }
    }

    /// The server task, for tests that watch it finish.
    pub fn take_task(&mut self) -> JoinHandle<Result<(), tern_broker::ServerError>> {
        self.task.take().expect("task not taken yet")
    }

    pub async fn client(&self) -> tern_client::Client {
        tern_client::Client::connect(self.address())
            .await
            .expect("client connects")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits a future, failing the test after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// A client that speaks raw frames, to pin the wire protocol: over TCP, or over an
/// in-memory pipe to a [`PipeBroker`].
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buffer: BytesMut,
}

impl RawClient<TcpStream> {
    pub async fn connect(broker: &TestBroker) -> RawClient {
        let stream = TcpStream::connect(broker.tcp).await.expect("tcp connect");
        RawClient {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Connects with a small kernel receive buffer (a client that reads slowly
    /// cannot hide behind megabytes of socket buffering) and completes the handshake.
    pub async fn hello_with_receive_buffer(broker: &TestBroker, bytes: u32) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(broker.tcp).await.expect("tcp connect");
        let mut client = RawClient {
            stream,
            buffer: BytesMut::new(),
        };
        client.handshake(Role::Consumer).await;
        client
    }

    /// Connects and completes the handshake with `role`.
    pub async fn hello(broker: &TestBroker, role: Role) -> (RawClient, Welcome) {
        let mut client = RawClient::connect(broker).await;
        let welcome = client.handshake(role).await;
        (client, welcome)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A raw client over any stream (already connected).
    pub fn over(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            buffer: BytesMut::new(),
        }
    }

    async fn handshake(&mut self, role: Role) -> Welcome {
        match self.hello_with_token(role, "").await {
            Frame::Welcome(welcome) => welcome,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Sends HELLO (version 1) with `token`; returns the answer (WELCOME or ERROR).
    pub async fn hello_with_token(&mut self, role: Role, token: &str) -> Frame {
        self.send(&Frame::Hello(Hello {
            version: 1,
            role,
            client_name: "raw".into(),
            auth_token: token.into(),
        }))
        .await;
        self.next().await
    }

    pub async fn send(&mut self, frame: &Frame) {
        let bytes = frame.to_bytes().expect("encode");
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` if the server closed the connection.
    pub async fn try_next(&mut self) -> Option<Frame> {
        within("a frame from the broker", async {
            loop {
                if let Some(frame) =
                    codec::decode(&mut self.buffer, 64 << 20).expect("broker sends valid frames")
                {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    pub async fn next(&mut self) -> Frame {
        self.try_next().await.expect("connection open")
    }

    /// The next frame that is not a PING (answering it).
    pub async fn next_non_ping(&mut self) -> Frame {
        loop {
            match self.next().await {
                Frame::Ping => self.send(&Frame::Pong).await,
                frame => return frame,
            }
        }
    }

    /// Expects an ERROR with `code`; returns its context and message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> (u64, String) {
        match self.next().await {
            Frame::Error(error) if error.code == code.as_u16() => {
                (error.context, error.message.to_string())
            }
            other => panic!("expected ERROR {code}, got {other:?}"),
        }
    }

    /// Expects the server to close the connection next.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.try_next().await {
            panic!("expected the connection to close, got {frame:?}");
        }
    }

    /// Sends PING and expects PONG: proves the connection is open and every earlier
    /// frame was processed without an answer.
    pub async fn expect_alive(&mut self) {
        self.send(&Frame::Ping).await;
        match self.next().await {
            Frame::Pong => {}
            other => panic!("expected PONG, got {other:?}"),
        }
    }
}

/// `GET path` over plain HTTP/1.1; returns the status code and body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("http connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("http write");
    let mut response = Vec::new();
    within("http response", stream.read_to_end(&mut response))
        .await
        .expect("http read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A PUBLISH of `x` to `subject` (sequence 0 = fire and forget).
pub fn publish(sequence: u64, subject: &str) -> Frame {
    Frame::Publish(Publish {
        sequence,
        message: Message::new(subject, "x").expect("a subject the wire can carry"),
    })
}

/// A broadcast SUBSCRIBE.
pub fn subscribe(sid: u32, pattern: &str) -> Frame {
    Frame::Subscribe(Subscribe {
        sid,
        mode: Some(DeliveryMode::Broadcast),
        prefetch: 0,
        pattern: pattern.into(),
        queue: None,
    })
}

/// A queue SUBSCRIBE joining `queue` by name.
pub fn queue_subscribe(sid: u32, queue: &str, prefetch: u32) -> Frame {
    Frame::Subscribe(Subscribe {
        sid,
        mode: Some(DeliveryMode::Queue),
        prefetch,
        pattern: "".into(),
        queue: Some(queue.into()),
    })
}

/// A broker whose clients connect over in-memory pipes (the transport seam) instead
/// of sockets: with no real I/O, a test on paused tokio time (`start_paused`) sees
/// the clock jump straight to the next timer whenever every task waits, so
/// keepalive, handshake and grace-period behaviour is tested at its production
/// values without waiting.
pub struct PipeBroker {
    pub broker: Arc<Broker>,
    pub stop: CancellationToken,
    sessions: TaskTracker,
}

impl PipeBroker {
    pub fn with(configure: impl FnOnce(&mut Config)) -> PipeBroker {
        let mut config = test_config();
        configure(&mut config);
        let security =
            tern_broker::security::Security::from_config(&config).expect("valid security settings");
        let broker = Arc::new(Broker::new(config).with_security(security));
        drop(broker.take_startup_hold());
        let stop = CancellationToken::new();
        tokio::spawn(broker.clone().run_housekeeping(stop.clone()));
        PipeBroker {
            broker,
            stop,
            sessions: TaskTracker::new(),
        }
    }

    /// A new connection, served by a session like any accepted socket.
    pub fn connect(&self) -> RawClient<DuplexStream> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        self.sessions.spawn(tern_broker::session::serve_connection(
            tern_broker::transport::Stream(server),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            self.broker.clone(),
            self.stop.clone(),
        ));
        RawClient::over(client)
    }

    /// Connects and completes the handshake with `role`.
    pub async fn hello(&self, role: Role) -> (RawClient<DuplexStream>, Welcome) {
        let mut client = self.connect();
        let welcome = client.handshake(role).await;
        (client, welcome)
    }

    /// Runs the server's shutdown sequence: cancels the sessions' token, then the
    /// same drain as `Server::run` (there is no listener to close).
    pub async fn shut_down(&self) {
        self.stop.cancel();
        tern_broker::server::drain::drain(&self.broker, &self.sessions, None).await;
    }
}

/// The `tern` binary under test.
pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// Starts the real `tern serve` on loopback port 0 with a JSON log on stderr.
pub fn spawn_server(envs: &[(&str, &str)]) -> std::process::Child {
    let mut command = Command::new(TERN);
    command
        .arg("serve")
        .env_clear()
        .env("BIND_ADDR", "127.0.0.1")
        .env("TCP_PORT", "0")
        .env("HTTP_PORT", "0")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    command.spawn().expect("start tern serve")
}

/// Reads the JSON log until the "ready" line; returns the TCP and HTTP addresses.
pub fn wait_for_ready_line(
    child: &mut std::process::Child,
) -> (String, String, BufReader<std::process::ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read log") > 0,
            "server exited before ready"
        );
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "tern is ready" {
            let field = |name: &str| {
                entry["fields"][name]
                    .as_str()
                    .expect("address field")
                    .trim_start_matches("Some(")
                    .trim_end_matches(')')
                    .to_owned()
            };
            return (field("tcp"), field("http"), stderr);
        }
    }
}

/// Runs `tern serve` on loopback port 0 with `envs` only, expecting it to refuse
/// to start with exit code 2 (a configuration error); returns what it printed.
pub fn serve_and_fail(envs: &[(&str, &str)]) -> String {
    let output = Command::new(TERN)
        .arg("serve")
        .env_clear()
        .env("BIND_ADDR", "127.0.0.1")
        .env("TCP_PORT", "0")
        .env("HTTP_PORT", "0")
        .envs(envs.iter().copied())
        .output()
        .expect("run tern serve");
    assert_eq!(output.status.code(), Some(2), "exit 2 (configuration)");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `token_sha256` of a token, as `AUTH_FILE` holds it.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
