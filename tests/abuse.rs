//! What a client — slow, careless or hostile — cannot do to the others. Each test is
//! one thing a client tries (or fails to do) and what everybody else still gets;
//! together they read as the broker's list of protections (README, "Limits and
//! protection"). Related cases pinned elsewhere: one connection cannot take every
//! subscription slot (`protocol.rs`), a stuck subscriber stays under its byte bound
//! (`delivery.rs`), every publish sent before shutdown is answered and the listen
//! backlog holds bursts (`lifecycle.rs`).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{within, PipeBroker, RawClient, TestBroker};
use tern_broker::broker::HOUSEKEEPING_INTERVAL;
use tern_broker::config::MemoryLimit;
use tern_client::{ClientError, ErrorCode};
use tern_proto::{codec, Frame, Hello, Message, Publish, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a slow subscriber reads its socket.
#[derive(Debug, Clone, Copy)]
enum ReadPattern {
    /// `bytes` per read call, then a pause of `every`.
    Steady { bytes: usize, every: Duration },
    /// Everything the socket holds, then a pause of `every`.
    Bursts { every: Duration },
}

async fn hello(stream: &mut TcpStream, role: Role) {
    let hello = Frame::Hello(Hello {
        version: 1,
        role,
        client_name: "abuse".into(),
        auth_token: "".into(),
    });
    stream
        .write_all(&hello.to_bytes().expect("encodes"))
        .await
        .expect("write");
}

/// Counts DELIVER and LAGGED frames in `buffer`, leaving a partial frame in it.
fn count_frames(buffer: &mut BytesMut, delivered: &mut usize, lagged: &mut u64) {
    while let Some(frame) = codec::decode(buffer, 64 << 20).expect("valid frames") {
        match frame {
            Frame::Deliver(_) => *delivered += 1,
            Frame::Lagged { missed, .. } => *lagged += missed,
            _ => {}
        }
    }
}

/// How long the subscriber reads slowly before it reads at full speed to the end:
/// long enough for the broker's send buffer to fill and for several stall periods
/// to pass (the loss this guards against showed within two seconds).
const SLOW_PHASE: Duration = Duration::from_secs(3);

/// Small messages, as many as fill every kernel buffer on the way (the broker's
/// send buffer autotunes up to 4 MiB): 250,000 frames of 30 bytes.
const MESSAGES: usize = 250_000;

/// Issue 13, finding 1: a broadcast subscriber that keeps reading, however slowly
/// its reads come, loses nothing, and its publisher is slowed instead. A publisher
/// pipelines [`MESSAGES`] small messages as fast as TCP takes them (8-byte payloads:
/// one 256 KiB read of them is ~9,000 frames, far more than the buffer); the
/// subscriber reads by `pattern` for [`SLOW_PHASE`] on a real socket with default
/// kernel buffers, then fast, and counts what it got.
async fn slow_reader_loses_nothing(pattern: ReadPattern) {
    let messages = MESSAGES;
    let broker = TestBroker::start().await;
    let mut subscriber = TcpStream::connect(broker.tcp).await.expect("connect");
    hello(&mut subscriber, Role::Consumer).await;
    subscriber
        .write_all(&common::subscribe(1, "slow").to_bytes().expect("encodes"))
        .await
        .expect("write");
    let mut buffer = BytesMut::with_capacity(1 << 20);
    let mut delivered = 0;
    let mut lagged = 0;
    // WELCOME, then SUBSCRIBE_OK: the subscription is routable.
    let mut subscribed = false;
    while !subscribed {
        assert!(subscriber.read_buf(&mut buffer).await.expect("read") > 0);
        while let Some(frame) = codec::decode(&mut buffer, 1 << 20).expect("valid") {
            subscribed |= matches!(frame, Frame::SubscribeOk { sid: 1 });
        }
    }

    let publish = Frame::Publish(Publish {
        sequence: 0,
        message: Message::new("slow", "12345678").expect("valid"),
    })
    .to_bytes()
    .expect("encodes");
    let mut publisher = TcpStream::connect(broker.tcp).await.expect("connect");
    hello(&mut publisher, Role::Producer).await;
    let publishing = tokio::spawn(async move {
        let batch: Vec<u8> = publish.repeat(1000);
        for _ in 0..messages / 1000 {
            publisher.write_all(&batch).await.expect("publish");
        }
        publisher
    });

    let mut chunk = vec![0u8; 1 << 20];
    let slow_until = tokio::time::Instant::now() + SLOW_PHASE;
    within("the slow reader gets every message", async {
        while delivered < messages && lagged == 0 {
            if tokio::time::Instant::now() >= slow_until {
                let read = subscriber.read(&mut chunk).await.expect("read");
                assert!(read > 0, "the broker closed the subscriber");
                buffer.extend_from_slice(&chunk[..read]);
                count_frames(&mut buffer, &mut delivered, &mut lagged);
                continue;
            }
            match pattern {
                ReadPattern::Steady { bytes, every } => {
                    let read = subscriber.read(&mut chunk[..bytes]).await.expect("read");
                    assert!(read > 0, "the broker closed the subscriber");
                    buffer.extend_from_slice(&chunk[..read]);
                    tokio::time::sleep(every).await;
                }
                ReadPattern::Bursts { every } => {
                    let read = subscriber.read(&mut chunk).await.expect("read");
                    assert!(read > 0, "the broker closed the subscriber");
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Ok(read) = subscriber.try_read(&mut chunk) {
                        if read == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                    }
                    tokio::time::sleep(every).await;
                }
            }
            count_frames(&mut buffer, &mut delivered, &mut lagged);
        }
    })
    .await;
    assert_eq!(
        (delivered, lagged),
        (messages, 0),
        "{pattern:?}: every message delivered, none dropped"
    );
    within("the publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(broker.broker.stats().snapshot().dropped_slow_consumer, 0);
}

/// 16 KiB every 20 ms, ~0.8 MB/s: the rate that lost 37 % of its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_800_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 16 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// 32 KiB every 20 ms, ~1.6 MB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_1600_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 32 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// 8 KiB every 20 ms, ~400 KB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_400_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 8 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// Empties its socket, then sleeps 300 ms: bursts with long silences between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_reads_in_bursts_every_300_ms_loses_nothing() {
    let pattern = ReadPattern::Bursts {
        every: Duration::from_millis(300),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// Issue 13, finding 4: creating queues, consuming and leaving, over and over,
/// never exhausts `MAX_QUEUES`: a queue that is empty and has had no consumer for
/// `QUEUE_EXPIRE_SECS` is deleted (on paused time: the 300 s pass at once).
#[tokio::test(start_paused = true)]
async fn queue_churn_never_exhausts_max_queues() {
    const MAX_QUEUES: u32 = 5;
    let broker = PipeBroker::with(|config| {
        config.max_queues = MAX_QUEUES as usize;
        config.max_consumers = 100;
        config.ping_interval = Duration::from_secs(86_400);
    });
    let (mut client, _) = broker.hello(Role::Both).await;
    for round in 0..4 {
        for n in 0..MAX_QUEUES {
            let sid = round * MAX_QUEUES + n + 1;
            let name = format!("churn.{round}.{n}");
            client.send(&common::queue_subscribe(sid, &name, 1)).await;
            assert_eq!(client.next().await, Frame::SubscribeOk { sid });
            client.send(&Frame::Unsubscribe { sid }).await;
        }
        client.expect_alive().await;
        assert_eq!(broker.broker.queue_count(), MAX_QUEUES as usize);
        tokio::time::sleep(Duration::from_secs(300) + HOUSEKEEPING_INTERVAL * 2).await;
        assert_eq!(broker.broker.queue_count(), 0, "round {round}: all expired");
    }
    assert_eq!(
        broker.broker.stats().queues_expired.get(),
        u64::from(4 * MAX_QUEUES)
    );
}

/// A queue holding messages is never expired, however long it waits.
#[tokio::test(start_paused = true)]
async fn a_queue_holding_messages_never_expires() {
    let broker = PipeBroker::with(|config| config.ping_interval = Duration::from_secs(86_400));
    let (mut client, _) = broker.hello(Role::Both).await;
    client.send(&common::queue_subscribe(1, "kept", 1)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    client.send(&Frame::Unsubscribe { sid: 1 }).await;
    client.send(&common::publish(1, "kept")).await;
    assert_eq!(client.next().await, Frame::PublishOk { sequence: 1 });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(broker.broker.queue("kept").is_some());
    client.send(&common::queue_subscribe(2, "kept", 1)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 2 });
    assert!(matches!(client.next().await, Frame::Deliver(_)));
}

/// Issue 13, finding 5: one client binds a queue to `>` and leaves; once it is full
/// every other client's confirmed publish, on any subject, gets QUEUE_FULL naming
/// it, counted per queue in `/metrics`; `tern queue delete` restores them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_abandoned_wildcard_queue_restores_everyone_s_publishes() {
    let broker = TestBroker::with(|config| config.queue_max_messages = 5).await;
    let (mut evil, _) = RawClient::hello(&broker, Role::Consumer).await;
    evil.send(&Frame::Subscribe(tern_proto::Subscribe {
        sid: 1,
        mode: Some(tern_proto::DeliveryMode::Queue),
        prefetch: 0,
        pattern: ">".into(),
        queue: Some("evil".into()),
    }))
    .await;
    assert_eq!(evil.next().await, Frame::SubscribeOk { sid: 1 });
    drop(evil);
    common::wait_until("evil has left", || {
        broker
            .broker
            .queue("evil")
            .is_some_and(|queue| !queue.has_consumers())
    })
    .await;

    let publisher = broker.client().await;
    for n in 0..5 {
        publisher
            .publish_confirmed(&format!("orders.{n}"), "x")
            .await
            .expect("stored in evil");
    }
    match publisher.publish_confirmed("billing.paid", "x").await {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::QueueFull.as_u16());
            assert!(message.contains("`evil`"), "{message}");
        }
        other => panic!("expected QUEUE_FULL, got {other:?}"),
    }
    let (_, metrics) = common::http_get(broker.http, "/metrics").await;
    assert!(
        metrics.contains("tern_queue_publish_refused_total{queue=\"evil\",reason=\"full\"} 1"),
        "{metrics}"
    );

    let listed = cli(&broker, &["queue", "ls"]);
    assert!(listed.status.success(), "{listed:?}");
    let table = String::from_utf8_lossy(&listed.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with("evil "))
        .unwrap_or_else(|| panic!("no row for evil in\n{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[..4], ["evil", ">", "5", "0"], "{row}");

    let deleted = cli(&broker, &["queue", "delete", "evil"]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout).trim(),
        "deleted evil with 5 message(s)"
    );
    publisher
        .publish_confirmed("billing.paid", "x")
        .await
        .expect("accepted again at once");
    let again = cli(&broker, &["queue", "delete", "evil"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("UNKNOWN_QUEUE"),
        "{again:?}"
    );
}

/// Runs the `tern` binary against `broker`.
fn cli(broker: &TestBroker, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .env("TERN_SERVER", broker.address())
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run tern")
}

/// A queue with consumers is deleted only with force; its consumers are told
/// QUEUE_DELETED for their subscription, and the SDK ends that subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_in_use_needs_force_and_ends_its_subscriptions() {
    let broker = TestBroker::start().await;
    let consumer = broker.client().await;
    let mut work = consumer
        .queue_subscribe("work", 4)
        .await
        .expect("subscribe");
    let admin = broker.client().await;
    match admin.delete_queue("work", false).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::QueueInUse.as_u16()),
        other => panic!("expected QUEUE_IN_USE, got {other:?}"),
    }
    admin
        .publish_confirmed("work", "job")
        .await
        .expect("queued");
    let delivery = within("delivery", work.next()).await.expect("a delivery");
    assert_eq!(admin.delete_queue("work", true).await.expect("deleted"), 1);
    assert!(
        within("the subscription ends", work.next()).await.is_none(),
        "no more deliveries for a deleted queue"
    );
    // Its delivery went with the queue: acking it is harmless (the broker answers
    // UNKNOWN_DELIVERY) and the connection keeps working.
    let _ = delivery.ack().await;
    common::wait_until("the slot is released", || {
        broker.broker.subscription_count() == 0
    })
    .await;
    assert!(admin.queues().await.expect("listed").is_empty());
}

/// Issue 13, finding 3: the broker-wide `MEMORY_LIMIT` refuses publishes to queues
/// with MEMORY_LIMIT — on every queue — while the consumer on the same connection
/// can still take and ack what it holds; below 90 % of the limit publishing
/// resumes.
#[tokio::test(start_paused = true)]
async fn the_memory_limit_refuses_then_resumes_without_deadlock() {
    let payload = vec![7u8; 1000];
    let message = Message::new("mem.a", payload.clone()).expect("valid");
    let per_message = tern_broker::memory::charge(&message);
    let broker = PipeBroker::with(|config| {
        config.memory_limit = MemoryLimit::Bytes(10 * per_message);
        config.max_consumers = 10;
    });
    let (mut client, _) = broker.hello(Role::Both).await;
    client
        .send(&common::queue_subscribe(1, "mem.a", 1000))
        .await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    let publish = |sequence, subject: &str| {
        Frame::Publish(Publish {
            sequence,
            message: Message::new(subject, payload.clone()).expect("valid"),
        })
    };
    let mut deliveries = Vec::new();
    let mut refused = 0;
    for sequence in 1..=12 {
        client.send(&publish(sequence, "mem.a")).await;
        loop {
            match client.next().await {
                Frame::Deliver(deliver) => deliveries.push(deliver.delivery_id),
                Frame::PublishOk { .. } => break,
                Frame::PublishError(error) => {
                    assert_eq!(error.code, ErrorCode::MemoryLimit.as_u16(), "{error:?}");
                    refused += 1;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((deliveries.len(), refused), (10, 2));
    assert!(broker.broker.memory().is_refusing());
    // Another queue is refused too: the limit is broker-wide.
    client.send(&common::queue_subscribe(2, "mem.b", 1)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 2 });
    client.send(&publish(13, "mem.b")).await;
    assert!(
        matches!(client.next().await, Frame::PublishError(error) if error.code == ErrorCode::MemoryLimit.as_u16())
    );
    let metrics = tern_broker::admin::metrics::render(&broker.broker).expect("render");
    assert!(metrics.contains("tern_memory_limit_reached 1"), "{metrics}");
    assert!(
        metrics.contains(
            "tern_queue_publish_refused_total{queue=\"mem.a\",reason=\"memory_limit\"} 2"
        ),
        "{metrics}"
    );
    // One ack leaves 9 of 10 held: not below the 90 % low watermark yet.
    client
        .send(&Frame::Ack {
            delivery_id: deliveries[0],
        })
        .await;
    client.expect_alive().await;
    assert!(broker.broker.memory().is_refusing(), "9 of 10 held");
    // A second one: 8 of 10, below it.
    client
        .send(&Frame::Ack {
            delivery_id: deliveries[1],
        })
        .await;
    client.expect_alive().await;
    assert!(!broker.broker.memory().is_refusing(), "8 of 10 held");
    client.send(&publish(14, "mem.b")).await;
    loop {
        match client.next().await {
            Frame::Deliver(_) => {}
            Frame::PublishOk { sequence: 14 } => break,
            other => panic!("expected PUBLISH_OK, got {other:?}"),
        }
    }
}

/// Issue 13, finding 6: hundreds of HTTP clients that send half a request and stall
/// cannot stop the probes answering, new protocol clients connecting, or a prompt
/// exit: at `HTTP_MAX_CONNECTIONS` a new connection closes the oldest, a request
/// has `HTTP_REQUEST_TIMEOUT_MS` to complete, and stopping closes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_cannot_stop_probes_new_clients_or_a_prompt_exit() {
    const SLOW: usize = 300;
    let mut broker = TestBroker::with(|config| {
        config.http_max_connections = 32;
        config.http_request_timeout = Duration::from_secs(2);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(broker.http).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\n")
            .await
            .expect("half a request");
        stalled.push(stream);
    }
    for path in ["/ready", "/healthz"] {
        let (status, _) = common::http_get(broker.http, path).await;
        assert_eq!(
            status, 200,
            "{path} answers with {SLOW} stalled requests open"
        );
    }
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.expect_alive().await;
    let evicted = broker.broker.stats().http_evicted.get();
    assert!(
        evicted >= (SLOW - 32) as u64,
        "the oldest stalled connections made room: {evicted} evicted"
    );
    // The newest stalled request is not evicted; its time runs out.
    let newest = stalled.last_mut().expect("one");
    let mut byte = [0u8; 1];
    let closed = within("the stalled request times out", newest.read(&mut byte)).await;
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(broker.broker.stats().http_timed_out.get() >= 1);

    // Stalled requests open again: stopping still ends the server promptly.
    for _ in 0..20 {
        let mut stream = TcpStream::connect(broker.http).await.expect("connect");
        stream
            .write_all(b"GET /ready HTTP/1.1\r\n")
            .await
            .expect("write");
        stalled.push(stream);
    }
    broker.stop.cancel();
    let server = broker.take_task();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops within 5 s")
        .expect("joined")
        .expect("clean exit");
}
