//! Health and readiness probes, the shutdown sequence, and configuration errors
//! of the real binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    http_get, spawn_server, wait_for_ready_line, wait_until, within, PipeBroker, RawClient,
    TestBroker,
};
use tern_proto::{ErrorCode, Frame, Role};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

#[tokio::test]
async fn healthz_answers_json_and_ready_is_200_while_serving() {
    let broker = TestBroker::start().await;
    let (status, body) = http_get(broker.http, "/healthz").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "ok");
    assert!(json["stats"]["published"].is_u64());
    assert_eq!(json["queues"], 0);
    assert!(json["stats"]["connections_closed"]["slow_consumer"].is_u64());
    let (status, body) = http_get(broker.http, "/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(broker.http, "/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ready_is_503_before_the_listener_runs() {
    let server = tern_broker::Server::bind(common::test_config())
        .await
        .expect("bind");
    let http = server.http_addr();
    let broker = server.broker();
    // Serve only HTTP, as during startup, to observe the state before `run`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let probe_address = listener.local_addr().expect("address");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(tern_broker::admin::serve(
        listener,
        broker.clone(),
        stop.clone(),
    ));
    let (status, body) = http_get(probe_address, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("starting"), "{body}");
    let (status, _) = http_get(probe_address, "/healthz").await;
    assert_eq!(status, 200, "liveness does not wait for readiness");
    stop.cancel();
    let running = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.run(running.clone()));
    wait_until("ready after run starts", || broker.is_ready()).await;
    assert_eq!(http_get(http, "/ready").await.0, 200);
    running.cancel();
}

/// A queue consumer that has received one message and not acked it.
async fn consumer_holding_one_delivery(broker: &TestBroker) -> (RawClient, u64) {
    let (mut consumer, _) = RawClient::hello(broker, Role::Consumer).await;
    consumer.send(&common::queue_subscribe(1, "work", 5)).await;
    assert_eq!(consumer.next().await, Frame::SubscribeOk { sid: 1 });
    let producer = broker.client().await;
    producer
        .publish_confirmed("work", "job")
        .await
        .expect("queued");
    match consumer.next().await {
        Frame::Deliver(deliver) => (consumer, deliver.delivery_id),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_ready_503_sends_goodbye_and_accepts_acks_during_grace() {
    let mut broker =
        TestBroker::with(|config| config.shutdown_grace = Duration::from_secs(20)).await;
    let (mut consumer, delivery_id) = consumer_holding_one_delivery(&broker).await;
    let http = broker.http;
    let tcp = broker.tcp;
    let server = broker.take_task();
    broker.stop.cancel();

    // Readiness drops at once; liveness stays.
    wait_until("ready turns 503", || !broker.broker.is_ready()).await;
    assert_eq!(http_get(http, "/ready").await.0, 503);
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    // The consumer is told, and may still settle what it holds.
    match consumer.next_non_ping().await {
        Frame::Goodbye(goodbye) => assert_eq!(goodbye.code, ErrorCode::ShuttingDown.as_u16()),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    // New connections are not accepted any more.
    wait_until("listener closed", || {
        std::net::TcpStream::connect(tcp).is_err()
    })
    .await;
    assert!(!server.is_finished(), "waits for the unacked delivery");
    consumer.send(&Frame::Ack { delivery_id }).await;
    // Holding nothing more, the consumer is disconnected and the server finishes.
    consumer.expect_closed().await;
    within("server finishes", server)
        .await
        .expect("task")
        .expect("clean");
}

/// Paused time over pipes: a 5 s grace period passes without waiting (under the
/// 10 s patience of every expectation).
#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_longer_than_the_grace_period() {
    let broker = PipeBroker::with(|config| config.shutdown_grace = Duration::from_secs(5));
    let (mut consumer, _) = broker.hello(Role::Consumer).await;
    consumer.send(&common::queue_subscribe(1, "work", 5)).await;
    assert_eq!(consumer.next().await, Frame::SubscribeOk { sid: 1 });
    let (mut producer, _) = broker.hello(Role::Producer).await;
    producer.send(&common::publish(1, "work")).await;
    assert_eq!(producer.next().await, Frame::PublishOk { sequence: 1 });
    assert!(matches!(consumer.next().await, Frame::Deliver(_)));
    let started = tokio::time::Instant::now();
    let server = broker.shut_down();
    tokio::pin!(server);
    let goodbye = tokio::select! {
        frame = consumer.next_non_ping() => frame,
        () = &mut server => panic!("the server finished before saying GOODBYE"),
    };
    assert!(matches!(goodbye, Frame::Goodbye(_)));
    // Never acks: closed when the grace period ends.
    let mut finished = false;
    let closed = tokio::select! {
        frame = consumer.try_next() => frame,
        () = &mut server => {
            finished = true;
            consumer.try_next().await
        }
    };
    assert!(
        closed.is_none(),
        "expected the connection to close, got {closed:?}"
    );
    if !finished {
        within("server finishes", server).await;
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "closed at the end of the grace period, not before or long after: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_zero_on_sigterm_after_saying_goodbye() {
    let mut child = spawn_server(&[("SHUTDOWN_GRACE_SECS", "20")]);
    let (tcp, http, _log) = wait_for_ready_line(&mut child);
    let http: std::net::SocketAddr = http.parse().expect("http address");
    assert_eq!(http_get(http, "/ready").await.0, 200);
    let client = tern_client::Client::connect(tcp)
        .await
        .expect("connect to the binary");
    client.publish_confirmed("x", "y").await.expect("works");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = within(
        "exit after SIGTERM",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("join")
    .expect("wait");
    assert_eq!(exit.code(), Some(0), "clean exit");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle clients do not hold the shutdown"
    );
}

#[test]
fn a_bad_environment_variable_stops_startup_with_exit_code_2_naming_it() {
    for (name, value, accepted) in [
        ("DELIVERY_MODE", "fanout", "broadcast, queue"),
        ("TCP_PORT", "abc", "port number"),
        ("MAX_CONSUMERS", "-1", "whole number"),
        ("LOG_FORMAT", "xml", "text, json"),
    ] {
        let output = Command::new(TERN)
            .arg("serve")
            .env_clear()
            .env(name, value)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(name) && stderr.contains(value) && stderr.contains(accepted),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn a_bad_flag_stops_startup_with_exit_code_2_naming_it() {
    let output = Command::new(TERN)
        .args(["serve", "--delivery-mode", "fanout"])
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--delivery-mode"));
}

#[test]
fn serve_help_names_every_variable_and_default() {
    let output = Command::new(TERN)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for setting in tern_broker::config::SETTINGS {
        assert!(
            help.contains(&format!("[env: {}]", setting.env)),
            "--help lacks {}",
            setting.env
        );
        assert!(
            help.contains(&format!("[default: {}]", setting.default)),
            "--help lacks default of {}",
            setting.env
        );
    }
}

#[test]
fn a_port_in_use_is_reported_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    let output = Command::new(TERN)
        .arg("serve")
        .env_clear()
        .env("BIND_ADDR", "127.0.0.1")
        .env("TCP_PORT", &port)
        .env("HTTP_PORT", "0")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TCP_PORT"));
}

/// Every frame that reached the broker before it closed a draining connection is
/// answered: publishes already in flight when shutdown began get `SHUTTING_DOWN`
/// (issue 13, finding 8). Paused time over pipes: the publishes are in the pipe
/// before the session sees the shutdown.
#[tokio::test(start_paused = true)]
async fn publishes_in_flight_when_shutdown_begins_are_all_answered() {
    const PUBLISHES: u64 = 200;
    let broker = PipeBroker::with(|_| {});
    let (mut producer, _) = broker.hello(Role::Producer).await;
    let mut burst = Vec::new();
    for sequence in 1..=PUBLISHES {
        burst.extend_from_slice(
            &common::publish(sequence, "jobs")
                .to_bytes()
                .expect("encodes"),
        );
    }
    producer.send_bytes(&burst).await;
    let server = broker.shut_down();
    tokio::pin!(server);
    let answered = tokio::select! {
        biased;
        answered = async {
            let mut answered = Vec::new();
            let mut goodbye = false;
            while let Some(frame) = producer.try_next().await {
                match frame {
                    Frame::Goodbye(_) => goodbye = true,
                    Frame::PublishOk { sequence } => answered.push(sequence),
                    Frame::PublishError(error) => {
                        assert_eq!(error.code, ErrorCode::ShuttingDown.as_u16());
                        answered.push(error.sequence);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(goodbye, "GOODBYE came first");
            answered
        } => answered,
        () = &mut server => panic!("the server finished before the answers were read"),
    };
    assert_eq!(answered, (1..=PUBLISHES).collect::<Vec<_>>());
}

/// Issue 13, finding 9: the listeners use `LISTEN_BACKLOG`, not the OS default of
/// 128. `ss` (iproute2, installed by `.ci/run`) shows a listener's backlog as its
/// Send-Q.
#[tokio::test]
async fn the_listeners_use_the_configured_backlog() {
    let broker = TestBroker::with(|config| config.listen_backlog = 700).await;
    // The kernel caps every backlog at net.core.somaxconn.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u32::MAX);
    let expected = 700.min(somaxconn).to_string();
    for address in [broker.tcp, broker.http] {
        let output = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{}", address.port())])
            .output()
            .expect("ss (iproute2) runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let send_q = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no listener on {address} in `{text}`"));
        assert_eq!(send_q, expected, "{text}");
    }
}
