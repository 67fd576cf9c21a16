//! The wire protocol, pinned with raw bytes: handshake, and every kind of bad input
//! getting its documented error while other clients keep working.

mod common;

use std::time::Duration;

use common::{publish, queue_subscribe, subscribe, wait_until, PipeBroker, RawClient, TestBroker};
use tern_proto::{DeliveryMode, ErrorCode, Frame, Hello, Message, Publish, Role, Subscribe};
use tokio::io::AsyncWriteExt;

/// A subscriber on `canary` that must keep receiving while others misbehave.
async fn bystander(broker: &TestBroker) -> RawClient {
    let (mut client, _) = RawClient::hello(broker, Role::Both).await;
    client.send(&subscribe(1, "canary")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    client
}

async fn assert_bystander_still_served(broker: &TestBroker, bystander: &mut RawClient) {
    let (mut producer, _) = RawClient::hello(broker, Role::Producer).await;
    producer.send(&publish(1, "canary")).await;
    assert_eq!(producer.next().await, Frame::PublishOk { sequence: 1 });
    match bystander.next_non_ping().await {
        Frame::Deliver(deliver) => assert_eq!(deliver.message.subject(), "canary"),
        other => panic!("bystander expected a delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_answers_welcome_with_the_limits() {
    let broker = TestBroker::with(|config| {
        config.max_consumers = 7;
        config.max_frame_bytes = 4096;
        config.default_prefetch = 9;
    })
    .await;
    let (_client, welcome) = RawClient::hello(&broker, Role::Both).await;
    assert_eq!(welcome.version, 1);
    assert!(welcome.connection_id > 0);
    assert_eq!(welcome.max_frame_bytes, 4096);
    assert_eq!(welcome.max_subscriptions, 7);
    assert_eq!(welcome.default_prefetch, 9);
    assert_eq!(welcome.max_subject_length, 256);
    assert!(welcome.server_name.starts_with("tern/"));
}

#[tokio::test]
async fn the_hello_example_bytes_from_the_spec_get_a_welcome() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect(&broker).await;
    client
        .send_bytes(&[
            0x00, 0x00, 0x00, 0x0b, 0x01, 0x00, 0x01, 0x03, 0x00, 0x03, 0x63, 0x6c, 0x69, 0x00,
            0x00,
        ])
        .await;
    assert!(matches!(client.next().await, Frame::Welcome(_)));
}

#[tokio::test]
async fn an_unsupported_version_is_refused_naming_the_supported_ones() {
    let broker = TestBroker::start().await;
    let mut canary = bystander(&broker).await;
    let mut client = RawClient::connect(&broker).await;
    client
        .send(&Frame::Hello(Hello {
            version: 99,
            role: Role::Both,
            client_name: "old".into(),
            auth_token: "".into(),
        }))
        .await;
    let (_, message) = client.expect_error(ErrorCode::UnsupportedVersion).await;
    assert!(message.contains("supported versions: 1"), "{message}");
    client.expect_closed().await;
    assert_bystander_still_served(&broker, &mut canary).await;
}

#[tokio::test]
async fn a_frame_before_hello_is_refused_and_closed() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect(&broker).await;
    client.send(&Frame::Ping).await;
    client.expect_error(ErrorCode::HandshakeRequired).await;
    client.expect_closed().await;
}

#[tokio::test]
async fn garbage_before_hello_gets_an_error_and_the_broker_keeps_serving() {
    let broker = TestBroker::start().await;
    let mut canary = bystander(&broker).await;
    let mut client = RawClient::connect(&broker).await;
    client
        .send_bytes(b"GET / HTTP/1.1\r\nHost: tern\r\n\r\n")
        .await;
    let (_, message) = client.expect_error(ErrorCode::FrameTooLarge).await;
    assert!(message.contains("exceeds the maximum"), "{message}");
    client.expect_closed().await;
    assert_bystander_still_served(&broker, &mut canary).await;
}

#[tokio::test]
async fn an_oversized_length_prefix_is_rejected_before_its_body_arrives() {
    let broker = TestBroker::with(|config| config.max_frame_bytes = 2048).await;
    let mut canary = bystander(&broker).await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    // Announce 2049 bytes and send none of them: the error must come anyway.
    client.send_bytes(&2049u32.to_be_bytes()).await;
    client.expect_error(ErrorCode::FrameTooLarge).await;
    client.expect_closed().await;
    assert_bystander_still_served(&broker, &mut canary).await;
}

#[tokio::test]
async fn a_truncated_frame_then_eof_is_reported_as_malformed() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    let bytes = publish(0, "orders").to_bytes().expect("encode");
    client.send_bytes(&bytes[..bytes.len() - 3]).await;
    client.stream.shutdown().await.expect("half-close");
    let (_, message) = client.expect_error(ErrorCode::MalformedFrame).await;
    assert!(message.contains("middle of a frame"), "{message}");
    client.expect_closed().await;
}

#[tokio::test]
async fn an_unknown_opcode_is_skipped_and_the_connection_stays_open() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send_bytes(&[0, 0, 0, 3, 0x7e, 0xde, 0xad]).await;
    let (_, message) = client.expect_error(ErrorCode::UnknownOpcode).await;
    assert!(message.contains("0x7e"), "{message}");
    client.expect_alive().await;
}

#[tokio::test]
async fn a_server_only_frame_from_a_client_is_unexpected() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&Frame::PublishOk { sequence: 1 }).await;
    client.expect_error(ErrorCode::UnexpectedFrame).await;
    client
        .send(&Frame::Hello(Hello {
            version: 1,
            role: Role::Both,
            client_name: "again".into(),
            auth_token: "".into(),
        }))
        .await;
    client.expect_error(ErrorCode::UnexpectedFrame).await;
    client.expect_alive().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_subject_is_a_malformed_frame() {
    let broker = TestBroker::start().await;
    let mut canary = bystander(&broker).await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    // PUBLISH: sequence 0, subject of 2 bytes 0xff 0xfe, empty reply-to, no headers.
    let body: Vec<u8> = [&[0x02][..], &[0; 8], &[0, 2, 0xff, 0xfe], &[0, 0], &[0, 0]].concat();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    client.send_bytes(&frame).await;
    let (_, message) = client.expect_error(ErrorCode::MalformedFrame).await;
    assert!(
        message.contains("subject") && message.contains("UTF-8"),
        "{message}"
    );
    client.expect_closed().await;
    assert_bystander_still_served(&broker, &mut canary).await;
}

#[tokio::test]
async fn empty_subjects_and_empty_tokens_are_invalid_and_the_connection_stays_open() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    for (sequence, subject) in [(1, ""), (2, "orders..eu"), (3, ".orders"), (4, "orders eu")] {
        client.send(&publish(sequence, subject)).await;
        match client.next().await {
            Frame::PublishError(error) => {
                assert_eq!(error.sequence, sequence);
                assert_eq!(
                    error.code,
                    ErrorCode::InvalidSubject.as_u16(),
                    "{subject:?}: {}",
                    error.message
                );
            }
            other => panic!("expected PUBLISH_ERROR for {subject:?}, got {other:?}"),
        }
    }
    // Fire-and-forget publishes are refused with ERROR instead.
    client.send(&publish(0, "a..b")).await;
    client.expect_error(ErrorCode::InvalidSubject).await;
    client.send(&subscribe(5, "orders.>.eu")).await;
    assert_eq!(client.expect_error(ErrorCode::InvalidSubject).await.0, 5);
    client.expect_alive().await;
}

#[tokio::test]
async fn a_wildcard_in_a_publish_subject_or_reply_to_is_refused() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&publish(1, "orders.*")).await;
    match client.next().await {
        Frame::PublishError(error) => assert_eq!(error.code, ErrorCode::WildcardInSubject.as_u16()),
        other => panic!("{other:?}"),
    }
    client
        .send(&Frame::Publish(Publish {
            sequence: 2,
            message: Message::encode("orders", Some("replies.>"), &[], b"x").expect("valid"),
        }))
        .await;
    match client.next().await {
        Frame::PublishError(error) => assert_eq!(error.code, ErrorCode::WildcardInSubject.as_u16()),
        other => panic!("{other:?}"),
    }
    client.expect_alive().await;
}

#[tokio::test]
async fn roles_are_enforced_with_permission_denied() {
    let broker = TestBroker::start().await;
    let (mut producer, _) = RawClient::hello(&broker, Role::Producer).await;
    producer.send(&subscribe(1, "orders")).await;
    let (context, message) = producer.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(context, 1);
    assert!(message.contains("PRODUCER"), "{message}");
    producer.expect_alive().await;

    let (mut consumer, _) = RawClient::hello(&broker, Role::Consumer).await;
    consumer.send(&publish(3, "orders")).await;
    match consumer.next().await {
        Frame::PublishError(error) => {
            assert_eq!(
                (error.sequence, error.code),
                (3, ErrorCode::PermissionDenied.as_u16())
            );
        }
        other => panic!("{other:?}"),
    }
    consumer.expect_alive().await;
}

#[tokio::test]
async fn acking_an_unknown_or_already_acked_delivery_is_an_error() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&Frame::Ack { delivery_id: 12345 }).await;
    assert_eq!(
        client.expect_error(ErrorCode::UnknownDelivery).await.0,
        12345
    );

    client.send(&queue_subscribe(2, "jobs", 5)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 2 });
    client.send(&publish(1, "jobs")).await;
    let mut delivery_id = 0;
    for _ in 0..2 {
        match client.next().await {
            Frame::PublishOk { sequence: 1 } => {}
            Frame::Deliver(deliver) => delivery_id = deliver.delivery_id,
            other => panic!("{other:?}"),
        }
    }
    assert_ne!(delivery_id, 0);
    client.send(&Frame::Ack { delivery_id }).await;
    client.send(&Frame::Ack { delivery_id }).await;
    assert_eq!(
        client.expect_error(ErrorCode::UnknownDelivery).await.0,
        delivery_id
    );
    client
        .send(&Frame::Nack {
            delivery_id,
            requeue: true,
        })
        .await;
    assert_eq!(
        client.expect_error(ErrorCode::UnknownDelivery).await.0,
        delivery_id
    );
    client.expect_alive().await;
}

#[tokio::test]
async fn subscribing_beyond_max_consumers_names_the_limit() {
    let broker = TestBroker::with(|config| config.max_consumers = 2).await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    for sid in 1..=2 {
        client.send(&subscribe(sid, "a")).await;
        assert_eq!(client.next().await, Frame::SubscribeOk { sid });
    }
    client.send(&subscribe(3, "a")).await;
    let (context, message) = client.expect_error(ErrorCode::TooManySubscriptions).await;
    assert_eq!(context, 3);
    assert!(
        message.contains("MAX_CONSUMERS") && message.contains('2'),
        "{message}"
    );
    // Freeing a slot makes room again.
    client.send(&Frame::Unsubscribe { sid: 1 }).await;
    client.send(&subscribe(3, "a")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 3 });
}

#[tokio::test]
async fn subscription_id_errors_are_specific() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&subscribe(1, "a")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    client.send(&subscribe(1, "b")).await;
    assert_eq!(
        client
            .expect_error(ErrorCode::DuplicateSubscription)
            .await
            .0,
        1
    );
    client.send(&Frame::Unsubscribe { sid: 9 }).await;
    assert_eq!(
        client.expect_error(ErrorCode::UnknownSubscription).await.0,
        9
    );
    client
        .send(&Frame::Credit {
            sid: 1,
            prefetch: 5,
        })
        .await;
    assert_eq!(
        client
            .expect_error(ErrorCode::NotAQueueSubscription)
            .await
            .0,
        1
    );
    client.send(&queue_subscribe(2, "q", 70_000)).await;
    assert_eq!(client.expect_error(ErrorCode::InvalidArgument).await.0, 2);
    client
        .send(&Frame::Subscribe(Subscribe {
            sid: 3,
            mode: Some(DeliveryMode::Queue),
            prefetch: 0,
            pattern: "a.*".into(),
            queue: None,
        }))
        .await;
    assert_eq!(client.expect_error(ErrorCode::InvalidQueueName).await.0, 3);
    client
        .send(&Frame::Subscribe(Subscribe {
            sid: 4,
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 0,
            pattern: "a".into(),
            queue: Some("q".into()),
        }))
        .await;
    assert_eq!(client.expect_error(ErrorCode::InvalidArgument).await.0, 4);
    client.expect_alive().await;
}

#[tokio::test]
async fn naming_a_queue_without_a_mode_joins_the_queue_even_in_broadcast_mode() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client
        .send(&Frame::Subscribe(Subscribe {
            sid: 1,
            mode: None,
            prefetch: 0,
            pattern: "".into(),
            queue: Some("named".into()),
        }))
        .await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    let queue = broker.broker.queue("named").expect("a queue was created");
    assert_eq!(queue.depth().consumers, 1);
}

#[tokio::test]
async fn a_queue_stays_bound_to_the_pattern_it_was_created_with() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    let bound = |sid, pattern: &str| {
        Frame::Subscribe(Subscribe {
            sid,
            mode: Some(DeliveryMode::Queue),
            prefetch: 0,
            pattern: pattern.into(),
            queue: Some("audit".into()),
        })
    };
    client.send(&bound(1, "orders.>")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    client.send(&bound(2, "billing.>")).await;
    let (context, message) = client.expect_error(ErrorCode::QueuePatternMismatch).await;
    assert_eq!(context, 2);
    assert!(message.contains("orders.>"), "{message}");
    // Joining by name alone takes the existing binding.
    client.send(&queue_subscribe(3, "audit", 0)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 3 });
}

/// Paused time over pipes: the production timeout (5 s) passes without waiting.
#[tokio::test(start_paused = true)]
async fn a_client_silent_after_connect_is_closed_with_handshake_timeout() {
    let broker =
        PipeBroker::with(|config| assert_eq!(config.handshake_timeout, Duration::from_secs(5)));
    let (mut canary, _) = broker.hello(Role::Both).await;
    canary.send(&subscribe(1, "canary")).await;
    assert_eq!(canary.next().await, Frame::SubscribeOk { sid: 1 });
    let started = tokio::time::Instant::now();
    let mut client = broker.connect();
    client.expect_error(ErrorCode::HandshakeTimeout).await;
    client.expect_closed().await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "not before the timeout"
    );
    let (mut producer, _) = broker.hello(Role::Producer).await;
    producer.send(&publish(1, "canary")).await;
    assert_eq!(producer.next().await, Frame::PublishOk { sequence: 1 });
    match canary.next_non_ping().await {
        Frame::Deliver(deliver) => assert_eq!(deliver.message.subject(), "canary"),
        other => panic!("bystander expected a delivery, got {other:?}"),
    }
    wait_until("the close is counted under its reason", || {
        broker.broker.stats().snapshot().connections_closed["handshake_timeout"] == 1
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused() {
    let broker = TestBroker::with(|config| config.max_connections = 2).await;
    let (mut first, _) = RawClient::hello(&broker, Role::Both).await;
    let (_second, _) = RawClient::hello(&broker, Role::Both).await;
    let mut third = RawClient::connect(&broker).await;
    let (_, message) = third.expect_error(ErrorCode::TooManyConnections).await;
    assert!(message.contains("MAX_CONNECTIONS"), "{message}");
    third.expect_closed().await;
    first.expect_alive().await;
    drop(first);
    wait_until("a connection slot frees up", || {
        broker.broker.connection_count() < 2
    })
    .await;
    let (mut fourth, _) = RawClient::hello(&broker, Role::Both).await;
    fourth.expect_alive().await;
}

/// Paused time over pipes: a 5 s interval passes without waiting (under the 10 s
/// patience of every expectation).
#[tokio::test(start_paused = true)]
async fn an_idle_client_is_pinged_and_closed_when_it_never_answers() {
    let broker = PipeBroker::with(|config| config.ping_interval = Duration::from_secs(5));
    let (mut client, _) = broker.hello(Role::Both).await;
    let started = tokio::time::Instant::now();
    assert_eq!(client.next().await, Frame::Ping);
    let pinged = started.elapsed();
    assert!(
        pinged >= Duration::from_secs(5) && pinged < Duration::from_secs(6),
        "PING after one silent interval: {pinged:?}"
    );
    client.expect_error(ErrorCode::StaleConnection).await;
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_secs(10) && closed < Duration::from_secs(11),
        "closed one interval later: {closed:?}"
    );
    client.expect_closed().await;
}

/// Paused time over pipes: eight 4 s intervals pass without waiting (a PING comes
/// every other interval: the PONG counts as traffic for the next one).
#[tokio::test(start_paused = true)]
async fn a_client_answering_pings_stays_connected() {
    let broker = PipeBroker::with(|config| config.ping_interval = Duration::from_secs(4));
    let (mut client, _) = broker.hello(Role::Both).await;
    for _ in 0..4 {
        assert_eq!(client.next().await, Frame::Ping);
        client.send(&Frame::Pong).await;
    }
    client.expect_alive().await;
}

#[tokio::test]
async fn a_publish_to_nobody_in_broadcast_mode_is_accepted_and_counted_as_dropped() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Producer).await;
    client.send(&publish(1, "nobody.listens")).await;
    assert_eq!(client.next().await, Frame::PublishOk { sequence: 1 });
    assert_eq!(broker.broker.stats().snapshot().dropped_no_interest, 1);
}

/// 200,000 invalid publishes, each answered by an ERROR of about 90 bytes: far more
/// answer bytes than loopback socket buffers hold, so the broker must stop reading
/// this client while its answers wait.
fn flood_of_invalid_publishes() -> (Vec<u8>, u64) {
    const COUNT: u64 = 200_000;
    let mut bytes = Vec::new();
    let frame = publish(0, "a..b").to_bytes().expect("encode");
    for _ in 0..COUNT {
        bytes.extend_from_slice(&frame);
    }
    (bytes, COUNT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answers_is_throttled_and_loses_none() {
    let broker = TestBroker::start().await;
    let (client, _) = RawClient::hello(&broker, Role::Producer).await;
    let (mut read_half, mut write_half) = client.stream.into_split();
    let (flood, count) = flood_of_invalid_publishes();
    let writer = tokio::spawn(async move {
        write_half
            .write_all(&flood)
            .await
            .expect("the broker reads everything eventually");
        write_half
    });
    // Only start reading once the broker has had to stop reading us.
    wait_until("broker processed a first part", || {
        broker.broker.stats().snapshot().publish_refused > 10_000
    })
    .await;
    let mut buffer = bytes::BytesMut::new();
    let mut errors = 0u64;
    while errors < count {
        while let Some(frame) =
            tern_proto::codec::decode(&mut buffer, 1 << 20).expect("valid frames")
        {
            match frame {
                Frame::Error(error) => {
                    assert_eq!(error.code, ErrorCode::InvalidSubject.as_u16());
                    errors += 1;
                }
                Frame::Ping => {}
                other => panic!("{other:?}"),
            }
        }
        if errors == count {
            break;
        }
        let read = common::within(
            "answers",
            tokio::io::AsyncReadExt::read_buf(&mut read_half, &mut buffer),
        )
        .await
        .expect("read");
        assert!(read > 0, "connection closed after {errors} answers");
    }
    assert_eq!(errors, count, "every request answered exactly once");
    drop(
        common::within("flood written", writer)
            .await
            .expect("writer"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_that_disconnects_releases_its_connection() {
    let broker = TestBroker::start().await;
    let (client, _) = RawClient::hello(&broker, Role::Producer).await;
    let (read_half, mut write_half) = client.stream.into_split();
    let (flood, _) = flood_of_invalid_publishes();
    let writer = tokio::spawn(async move {
        let _ = write_half.write_all(&flood).await;
    });
    wait_until("broker processed a first part", || {
        broker.broker.stats().snapshot().publish_refused > 10_000
    })
    .await;
    assert_eq!(broker.broker.connection_count(), 1);
    writer.abort();
    let _ = writer.await;
    drop(read_half);
    wait_until("the session ends and frees its slot", || {
        broker.broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_is_closed_after_the_write_deadline() {
    let broker = TestBroker::with(|config| {
        config.write_deadline = Duration::from_millis(300);
        config.consumer_channel_buffer_size = 100_000;
    })
    .await;
    let (mut stuck, _) = RawClient::hello(&broker, Role::Consumer).await;
    stuck.send(&subscribe(1, "firehose")).await;
    assert_eq!(stuck.next().await, Frame::SubscribeOk { sid: 1 });
    let publisher = broker.client().await;
    let payload = vec![0u8; 16 * 1024];
    // 64 MiB: more than the kernel buffers of a reader that reads nothing.
    for _ in 0..4096 {
        publisher
            .publish("firehose", payload.clone())
            .await
            .expect("publish");
    }
    publisher
        .flush()
        .await
        .expect("the publisher is not held up");
    wait_until("the stuck subscriber is disconnected", || {
        broker.broker.connection_count() == 1
    })
    .await;
    wait_until("its subscription is released", || {
        broker.broker.subscription_count() == 0
    })
    .await;
    publisher
        .publish_confirmed("firehose", "still serving")
        .await
        .expect("publisher unaffected");
}

// PROTOCOL.md answers to what an outside implementer had to guess.

#[tokio::test]
async fn an_unknown_opcode_before_hello_is_handshake_required_and_closes() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect(&broker).await;
    client.send_bytes(&[0, 0, 0, 1, 0x7e]).await;
    client.expect_error(ErrorCode::HandshakeRequired).await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_broadcast_subscribe_ignores_its_prefetch_whatever_its_value() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client
        .send(&Frame::Subscribe(Subscribe {
            sid: 1,
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 1_000_000,
            pattern: "ticks".into(),
            queue: None,
        }))
        .await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    // A queue subscription still has its range checked.
    client
        .send(&Frame::Subscribe(Subscribe {
            sid: 2,
            mode: Some(DeliveryMode::Queue),
            prefetch: 1_000_000,
            pattern: "".into(),
            queue: Some("jobs".into()),
        }))
        .await;
    assert_eq!(client.expect_error(ErrorCode::InvalidArgument).await.0, 2);
}

#[tokio::test]
async fn a_queue_subscribe_without_a_queue_name_needs_a_literal_pattern() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    for (sid, pattern) in [(1, "orders.*"), (2, "orders.>"), (3, "")] {
        client
            .send(&Frame::Subscribe(Subscribe {
                sid,
                mode: Some(DeliveryMode::Queue),
                prefetch: 0,
                pattern: pattern.into(),
                queue: None,
            }))
            .await;
        assert_eq!(
            client.expect_error(ErrorCode::InvalidQueueName).await.0,
            u64::from(sid),
            "{pattern:?}"
        );
    }
}

#[tokio::test]
async fn unicode_whitespace_is_refused_in_subjects_and_other_non_ascii_is_accepted() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    for (sid, pattern) in [
        (1, "a\u{a0}b"),
        (2, "a\u{2028}b"),
        (3, "a\u{3000}b"),
        (4, "a\u{85}b"),
    ] {
        client.send(&subscribe(sid, pattern)).await;
        assert_eq!(
            client.expect_error(ErrorCode::InvalidSubject).await.0,
            u64::from(sid),
            "{pattern:?}"
        );
    }
    client.send(&subscribe(5, "café.日本")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 5 });
}

#[tokio::test]
async fn subscription_id_zero_is_accepted() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&subscribe(0, "zero")).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 0 });
    client.send(&publish(1, "zero")).await;
    let mut frames = [client.next().await, client.next().await];
    frames.sort_by_key(|frame| matches!(frame, Frame::Deliver(_)));
    assert_eq!(frames[0], Frame::PublishOk { sequence: 1 });
    assert!(matches!(&frames[1], Frame::Deliver(deliver) if deliver.sid == 0));
}

#[tokio::test]
async fn a_redelivery_gets_a_new_delivery_id() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::hello(&broker, Role::Both).await;
    client.send(&queue_subscribe(1, "work", 1)).await;
    assert_eq!(client.next().await, Frame::SubscribeOk { sid: 1 });
    client.send(&publish(0, "work")).await;
    let Frame::Deliver(first) = client.next().await else {
        panic!("a delivery")
    };
    client
        .send(&Frame::Nack {
            delivery_id: first.delivery_id,
            requeue: true,
        })
        .await;
    let Frame::Deliver(second) = client.next().await else {
        panic!("a redelivery")
    };
    assert!(second.redelivered);
    assert_ne!(second.delivery_id, first.delivery_id);
    client
        .send(&Frame::Ack {
            delivery_id: first.delivery_id,
        })
        .await;
    assert_eq!(
        client.expect_error(ErrorCode::UnknownDelivery).await.0,
        first.delivery_id
    );
}

/// Shutdown closes a connection that holds nothing right after GOODBYE, and one
/// that settles its last delivery at once; PING is answered meanwhile. Paused time:
/// "at once" means before any of the grace period has passed.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_a_connection_as_soon_as_it_holds_nothing_and_answers_ping_meanwhile() {
    let broker = PipeBroker::with(|config| config.shutdown_grace = Duration::from_secs(5));
    let (mut idle, _) = broker.hello(Role::Both).await;
    let (mut consumer, _) = broker.hello(Role::Consumer).await;
    consumer.send(&queue_subscribe(1, "work", 5)).await;
    assert_eq!(consumer.next().await, Frame::SubscribeOk { sid: 1 });
    let (mut producer, _) = broker.hello(Role::Producer).await;
    producer.send(&publish(1, "work")).await;
    assert_eq!(producer.next().await, Frame::PublishOk { sequence: 1 });
    let Frame::Deliver(delivery) = consumer.next().await else {
        panic!("a delivery")
    };
    let started = tokio::time::Instant::now();
    let server = broker.shut_down();
    tokio::pin!(server);
    let frames = tokio::select! {
        // The server can finish only once the consumer's session has closed, which
        // is also the last step below: check the frames first.
        biased;
        frames = async {
            let goodbye = idle.next().await;
            let closed = idle.try_next().await;
            let consumer_goodbye = consumer.next().await;
            consumer.send(&Frame::Ping).await;
            let pong = consumer.next().await;
            consumer.send(&Frame::Ack { delivery_id: delivery.delivery_id }).await;
            let consumer_closed = consumer.try_next().await;
            (goodbye, closed, consumer_goodbye, pong, consumer_closed)
        } => frames,
        () = &mut server => panic!("the server finished first"),
    };
    assert!(matches!(frames.0, Frame::Goodbye(_)));
    assert_eq!(
        frames.1, None,
        "holding nothing: closed right after GOODBYE"
    );
    assert!(matches!(frames.2, Frame::Goodbye(_)));
    assert_eq!(
        frames.3,
        Frame::Pong,
        "PING answered during the grace period"
    );
    assert_eq!(frames.4, None, "closed once its last delivery is settled");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "none of the grace period used"
    );
}

/// Issue 13, finding 7: one connection cannot take every `MAX_CONSUMERS` slot.
#[tokio::test]
async fn one_connection_cannot_take_every_subscription_slot() {
    let broker = TestBroker::with(|config| {
        config.max_consumers = 10;
        config.max_subscriptions_per_connection = 3;
    })
    .await;
    let (mut greedy, _) = RawClient::hello(&broker, Role::Both).await;
    for sid in 1..=3 {
        greedy.send(&subscribe(sid, "greedy")).await;
        assert_eq!(greedy.next().await, Frame::SubscribeOk { sid });
    }
    greedy.send(&subscribe(4, "greedy")).await;
    let (context, message) = greedy.expect_error(ErrorCode::TooManySubscriptions).await;
    assert_eq!(context, 4);
    assert!(
        message.contains("MAX_SUBSCRIPTIONS_PER_CONNECTION"),
        "{message}"
    );
    // Another connection still gets its share; the greedy one may resubscribe once it
    // has released a slot.
    let (mut other, _) = RawClient::hello(&broker, Role::Both).await;
    other.send(&subscribe(1, "other")).await;
    assert_eq!(other.next().await, Frame::SubscribeOk { sid: 1 });
    greedy.send(&Frame::Unsubscribe { sid: 1 }).await;
    greedy.send(&subscribe(5, "greedy")).await;
    assert_eq!(greedy.next().await, Frame::SubscribeOk { sid: 5 });
}
