//! Delivery semantics through the SDK: broadcast, wildcards, queues, request/reply,
//! flow control and slow consumers.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{wait_until, within, RawClient, TestBroker};
use tern_client::{
    Client, ClientError, ClientOptions, ErrorCode, OutgoingMessage, ReconnectPolicy,
};
use tern_proto::{Frame, Message, Publish, Role, Subscribe};

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("message-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_delivers_every_message_to_every_subscriber_once_in_order() {
    const SUBSCRIBERS: usize = 4;
    const MESSAGES: usize = 2000;
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let mut subscriptions = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let client = broker.client().await;
        subscriptions.push(client.subscribe("orders.created").await.expect("subscribe"));
    }
    let publisher = broker.client().await;
    for payload in numbered(MESSAGES) {
        publisher
            .publish("orders.created", payload)
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    for subscription in &mut subscriptions {
        let mut received = Vec::with_capacity(MESSAGES);
        while received.len() < MESSAGES {
            let message = within("broadcast message", subscription.next())
                .await
                .expect("open");
            received.push(String::from_utf8(message.payload().to_vec()).expect("utf-8"));
        }
        assert_eq!(
            received,
            numbered(MESSAGES),
            "every message exactly once, in publish order"
        );
        assert_eq!(subscription.missed(), 0);
    }
    let stats = broker.broker.stats().snapshot();
    assert_eq!(stats.published, MESSAGES as u64);
    wait_until("delivery counters", || {
        broker.broker.stats().snapshot().delivered_broadcast == (SUBSCRIBERS * MESSAGES) as u64
    })
    .await;
}

#[tokio::test]
async fn wildcards_route_to_exactly_the_matching_subscriptions() {
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let client = broker.client().await;
    let mut exact = client
        .subscribe("orders.eu.created")
        .await
        .expect("subscribe");
    let mut single = client
        .subscribe("orders.*.created")
        .await
        .expect("subscribe");
    let mut tail = client.subscribe("orders.>").await.expect("subscribe");
    let mut everything = client.subscribe(">").await.expect("subscribe");
    for subject in [
        "orders.eu.created",
        "orders.us.created",
        "orders.eu",
        "billing.eu.created",
    ] {
        client.publish(subject, subject).await.expect("publish");
    }
    client.flush().await.expect("flush");
    async fn subjects(subscription: &mut tern_client::Subscription, count: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..count {
            seen.push(
                within("message", subscription.next())
                    .await
                    .expect("open")
                    .subject()
                    .to_string(),
            );
        }
        seen
    }
    assert_eq!(subjects(&mut exact, 1).await, ["orders.eu.created"]);
    assert_eq!(
        subjects(&mut single, 2).await,
        ["orders.eu.created", "orders.us.created"]
    );
    assert_eq!(
        subjects(&mut tail, 3).await,
        ["orders.eu.created", "orders.us.created", "orders.eu"]
    );
    assert_eq!(subjects(&mut everything, 4).await.len(), 4);
    // Nothing more arrived for the narrow patterns.
    client
        .publish("orders.eu.created", "marker")
        .await
        .expect("publish");
    let marker = within("marker", exact.next()).await.expect("open");
    assert_eq!(marker.payload(), b"marker");
}

#[tokio::test]
async fn headers_and_reply_to_travel_unchanged() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let mut subscription = client.subscribe("audit").await.expect("subscribe");
    client
        .send(
            OutgoingMessage::new("audit", "payload")
                .header("trace", "t-1")
                .header("trace", "t-2")
                .reply_to("audit.replies"),
        )
        .await
        .expect("send");
    let message = within("message", subscription.next()).await.expect("open");
    assert_eq!(message.header("trace"), Some("t-1"));
    assert_eq!(message.headers().len(), 2);
    assert_eq!(message.reply_to(), Some("audit.replies"));
    assert_eq!(message.payload(), b"payload");
}

#[tokio::test]
async fn unsubscribing_stops_delivery_and_frees_the_slot() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let subscription = client.subscribe("news").await.expect("subscribe");
    assert_eq!(broker.broker.subscription_count(), 1);
    drop(subscription);
    wait_until("unsubscribed", || broker.broker.subscription_count() == 0).await;
    client
        .publish_confirmed("news", "nobody")
        .await
        .expect("accepted");
    wait_until("counted as no interest", || {
        broker.broker.stats().snapshot().dropped_no_interest == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_consumers_get_disjoint_sets_whose_union_is_everything() {
    const CONSUMERS: usize = 3;
    const MESSAGES: usize = 3000;
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let mut workers = Vec::new();
    for _ in 0..CONSUMERS {
        let client = broker.client().await;
        let mut jobs = client
            .queue_subscribe("jobs", 32)
            .await
            .expect("queue subscribe");
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(job) = jobs.next().await {
                if job.payload() == b"stop" {
                    job.ack().await.expect("ack");
                    break;
                }
                got.push(String::from_utf8(job.payload().to_vec()).expect("utf-8"));
                job.ack().await.expect("ack");
            }
            drop(client);
            got
        }));
    }
    let publisher = broker.client().await;
    for payload in numbered(MESSAGES) {
        publisher.publish("jobs", payload).await.expect("publish");
    }
    for _ in 0..CONSUMERS {
        publisher
            .publish_confirmed("jobs", "stop")
            .await
            .expect("stop");
    }
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for worker in workers {
        let got = within("worker finishes", worker).await.expect("worker");
        shares.push(got.len());
        all.extend(got);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "no message twice");
    assert_eq!(unique.len(), MESSAGES, "every message once");
    assert!(
        shares.iter().all(|share| *share > 0),
        "every consumer got work: {shares:?}"
    );
}

#[tokio::test]
async fn a_single_queue_consumer_sees_fifo_order() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    for payload in numbered(500) {
        client
            .publish("fifo", payload.clone())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    // Published before anyone consumes: DELIVERY_MODE=broadcast drops them, so
    // create the queue first in this test.
    let mut queue = client.queue_subscribe("fifo", 10).await.expect("subscribe");
    for payload in numbered(500) {
        client.publish("fifo", payload).await.expect("publish");
    }
    for expected in numbered(500) {
        let delivery = within("delivery", queue.next()).await.expect("open");
        assert_eq!(
            std::str::from_utf8(delivery.payload()).expect("utf-8"),
            expected
        );
        delivery.ack().await.expect("ack");
    }
}

#[tokio::test]
async fn prefetch_bounds_unacked_deliveries() {
    let broker = TestBroker::start().await;
    let (mut consumer, _) = RawClient::hello(&broker, Role::Consumer).await;
    consumer.send(&common::queue_subscribe(1, "work", 3)).await;
    assert_eq!(consumer.next().await, Frame::SubscribeOk { sid: 1 });
    let producer = broker.client().await;
    for payload in numbered(10) {
        producer
            .publish_confirmed("work", payload)
            .await
            .expect("queued");
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        match consumer.next().await {
            Frame::Deliver(deliver) => held.push(deliver.delivery_id),
            other => panic!("{other:?}"),
        }
    }
    // A fourth delivery would come before this PONG if prefetch were not respected.
    consumer.expect_alive().await;
    let queue = broker.broker.queue("work").expect("queue exists");
    assert_eq!((queue.depth().ready, queue.depth().unacked), (7, 3));
    consumer
        .send(&Frame::Ack {
            delivery_id: held[0],
        })
        .await;
    match consumer.next().await {
        Frame::Deliver(deliver) => assert_eq!(deliver.message.payload(), b"message-3"),
        other => panic!("{other:?}"),
    }
    consumer.expect_alive().await;
    // CREDIT 0 pauses; raising it resumes.
    consumer
        .send(&Frame::Credit {
            sid: 1,
            prefetch: 0,
        })
        .await;
    for id in &held[1..] {
        consumer.send(&Frame::Ack { delivery_id: *id }).await;
    }
    consumer.expect_alive().await;
    assert_eq!(queue.depth().unacked, 1);
    consumer
        .send(&Frame::Credit {
            sid: 1,
            prefetch: 10,
        })
        .await;
    let mut resumed = 0;
    while resumed < 6 {
        if let Frame::Deliver(_) = consumer.next().await {
            resumed += 1;
        }
    }
}

#[tokio::test]
async fn a_disconnected_consumers_unacked_messages_are_redelivered_first_and_flagged() {
    let broker = TestBroker::start().await;
    let producer = broker.client().await;
    let first = broker.client().await;
    let mut first_queue = first.queue_subscribe("tasks", 2).await.expect("subscribe");
    for payload in ["a", "b", "c"] {
        producer
            .publish_confirmed("tasks", payload)
            .await
            .expect("queued");
    }
    let a = within("a", first_queue.next()).await.expect("open");
    let _b = within("b", first_queue.next()).await.expect("open");
    assert!(!a.is_redelivered());
    drop(first_queue);
    first.close().await;
    let second = broker.client().await;
    let mut second_queue = second
        .queue_subscribe("tasks", 10)
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    for _ in 0..3 {
        let delivery = within("redelivery", second_queue.next())
            .await
            .expect("open");
        got.push((
            String::from_utf8(delivery.payload().to_vec()).expect("utf-8"),
            delivery.is_redelivered(),
        ));
        delivery.ack().await.expect("ack");
    }
    assert_eq!(
        got,
        [
            ("a".to_owned(), true),
            ("b".to_owned(), true),
            ("c".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn nack_with_requeue_redelivers_and_without_requeue_discards() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let mut queue = client.queue_subscribe("retry", 1).await.expect("subscribe");
    client
        .publish_confirmed("retry", "first")
        .await
        .expect("queued");
    client
        .publish_confirmed("retry", "second")
        .await
        .expect("queued");
    let delivery = within("first", queue.next()).await.expect("open");
    delivery.nack(true).await.expect("nack");
    let again = within("first again", queue.next()).await.expect("open");
    assert_eq!(again.payload(), b"first");
    assert!(again.is_redelivered());
    again.nack(false).await.expect("discard");
    let next = within("second", queue.next()).await.expect("open");
    assert_eq!(next.payload(), b"second");
    next.ack().await.expect("ack");
    wait_until("discard counted", || {
        broker.broker.stats().snapshot().dropped_rejected == 1
    })
    .await;
}

#[tokio::test]
async fn queue_delivery_mode_holds_messages_published_before_any_consumer() {
    let broker =
        TestBroker::with(|config| config.delivery_mode = tern_proto::DeliveryMode::Queue).await;
    let producer = broker.client().await;
    for payload in numbered(5) {
        producer
            .publish_confirmed("emails", payload)
            .await
            .expect("held");
    }
    // A SUBSCRIBE that names no mode uses DELIVERY_MODE=queue.
    let (mut consumer, _) = RawClient::hello(&broker, Role::Consumer).await;
    consumer
        .send(&Frame::Subscribe(Subscribe {
            sid: 4,
            mode: None,
            prefetch: 0,
            pattern: "emails".into(),
            queue: None,
        }))
        .await;
    assert_eq!(consumer.next().await, Frame::SubscribeOk { sid: 4 });
    for expected in numbered(5) {
        match consumer.next().await {
            Frame::Deliver(deliver) => {
                assert_eq!(deliver.sid, 4);
                assert_ne!(deliver.delivery_id, 0);
                assert_eq!(
                    std::str::from_utf8(deliver.message.payload()).expect("utf-8"),
                    expected
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_full_queue_refuses_the_publish_with_an_error() {
    let broker = TestBroker::with(|config| config.queue_max_messages = 3).await;
    let client = broker.client().await;
    let queue = client
        .queue_subscribe("bounded", 1)
        .await
        .expect("subscribe");
    for n in 0..3 {
        client
            .publish_confirmed("bounded", format!("{n}"))
            .await
            .expect("room");
    }
    let error = client
        .publish_confirmed("bounded", "overflow")
        .await
        .expect_err("full");
    assert_eq!(error.code(), Some(ErrorCode::QueueFull), "{error}");
    assert!(error.to_string().contains("bounded"), "{error}");
    drop(queue);
    // A byte limit refuses too.
    let broker = TestBroker::with(|config| config.queue_max_bytes = 10).await;
    let client = broker.client().await;
    let _queue = client.queue_subscribe("small", 0).await.expect("subscribe");
    client
        .publish_confirmed("small", "0123456789")
        .await
        .expect("exactly at the limit");
    let error = client
        .publish_confirmed("small", "x")
        .await
        .expect_err("over the byte limit");
    assert_eq!(error.code(), Some(ErrorCode::QueueFull));
}

#[tokio::test]
async fn request_reply_round_trips() {
    let broker = TestBroker::start().await;
    let responder = broker.client().await;
    let mut requests = responder.subscribe("svc.upper").await.expect("subscribe");
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let upper = request.payload().to_ascii_uppercase();
            responder.respond(&request, upper).await.expect("respond");
        }
    });
    let requester = broker.client().await;
    for word in ["tern", "broker", "fast"] {
        let reply = requester
            .request("svc.upper", word, Duration::from_secs(5))
            .await
            .expect("reply");
        assert_eq!(reply.payload(), word.to_ascii_uppercase().as_bytes());
    }
}

#[tokio::test]
async fn a_request_nobody_can_answer_fails_at_once_with_no_responders() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let started = std::time::Instant::now();
    let error = client
        .request("svc.missing", "hi", Duration::from_secs(30))
        .await
        .expect_err("nobody");
    assert!(
        matches!(error, ClientError::NoResponders { ref subject } if subject == "svc.missing"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "not a timeout");
    // A queue without consumers cannot answer either.
    let _queue = broker
        .broker
        .bind_queue("svc.queued", "svc.queued")
        .expect("queue");
    let error = client
        .request("svc.queued", "hi", Duration::from_secs(30))
        .await
        .expect_err("nobody");
    assert!(matches!(error, ClientError::NoResponders { .. }), "{error}");
}

#[tokio::test]
async fn a_request_whose_responder_stays_silent_times_out() {
    let broker = TestBroker::start().await;
    let silent = broker.client().await;
    let _requests = silent.subscribe("svc.silent").await.expect("subscribe");
    let client = broker.client().await;
    let error = client
        .request("svc.silent", "hi", Duration::from_millis(200))
        .await
        .expect_err("silence");
    assert!(matches!(error, ClientError::Timeout), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_its_gap_and_the_publisher_is_not_blocked() {
    const BUFFER: usize = 200;
    const MESSAGES: u64 = 5_000;
    let broker = TestBroker::with(|config| config.consumer_channel_buffer_size = BUFFER).await;
    // The slow subscriber subscribes and then reads nothing.
    let (mut slow, _) = RawClient::hello(&broker, Role::Consumer).await;
    slow.send(&common::subscribe(1, "ticks")).await;
    assert_eq!(slow.next().await, Frame::SubscribeOk { sid: 1 });
    // A healthy subscriber on the same subject.
    let healthy_client = broker.client().await;
    let mut healthy = healthy_client.subscribe("ticks").await.expect("subscribe");
    let publisher = broker.client().await;
    let payload = vec![b'x'; 4096];
    for _ in 0..MESSAGES {
        publisher
            .publish("ticks", payload.clone())
            .await
            .expect("publish never blocks on the slow subscriber");
    }
    publisher
        .flush()
        .await
        .expect("every publish processed while the slow subscriber reads nothing");
    // The broker dropped for the slow subscriber only, and counted it.
    wait_until("drops counted", || {
        broker.broker.stats().snapshot().dropped_slow_consumer > 0
    })
    .await;
    // The healthy subscriber accounts for every message: received, or reported missed
    // if the burst outran even its buffer.
    let mut received = 0u64;
    while received + healthy.missed() < MESSAGES {
        within("healthy subscriber drains", healthy.next())
            .await
            .expect("open");
        received += 1;
    }
    assert_eq!(received + healthy.missed(), MESSAGES);
    // Now the slow subscriber reads: deliveries plus LAGGED reports account for every message.
    let mut delivered = 0u64;
    let mut missed = 0u64;
    while delivered + missed < MESSAGES {
        match slow.next().await {
            Frame::Deliver(_) => delivered += 1,
            Frame::Lagged {
                sid: 1,
                missed: count,
            } => missed += count,
            Frame::Ping => slow.send(&Frame::Pong).await,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered + missed, MESSAGES);
    assert!(missed > 0, "a gap was reported");
    assert_eq!(
        missed + healthy.missed(),
        broker.broker.stats().snapshot().dropped_slow_consumer
    );
}

#[tokio::test]
async fn the_sdk_reports_lagged_counts_on_the_subscription() {
    let broker = TestBroker::with(|config| config.consumer_channel_buffer_size = 10).await;
    let options = ClientOptions {
        subscription_capacity: 1,
        ..ClientOptions::default()
    };
    let slow_client = Client::connect_with(broker.address(), options)
        .await
        .expect("connect");
    let mut slow = slow_client.subscribe("burst").await.expect("subscribe");
    let publisher = broker.client().await;
    for n in 0..20_000u32 {
        publisher
            .publish("burst", vec![0u8; 1024 + (n % 2) as usize])
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    wait_until("drops", || {
        broker.broker.stats().snapshot().dropped_slow_consumer > 0
    })
    .await;
    let mut received = 0u64;
    while received + slow.missed() < 20_000 {
        within("drain", slow.next()).await.expect("open");
        received += 1;
    }
    assert!(slow.missed() > 0);
    assert_eq!(received + slow.missed(), 20_000);
}

#[tokio::test]
async fn a_client_reconnects_and_resubscribes_after_the_broker_restarts() {
    let first = TestBroker::start().await;
    let address = first.tcp;
    let options = ClientOptions::default().reconnect(ReconnectPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..ReconnectPolicy::default()
    });
    let client = Client::connect_with(address.to_string(), options)
        .await
        .expect("connect");
    let mut subscription = client.subscribe("alerts").await.expect("subscribe");
    first.shutdown().await;
    // A new broker on the same port.
    let mut config = common::test_config();
    config.tcp_port = address.port();
    let second = TestBroker::from_config(config).await;
    wait_until("resubscribed on the new broker", || {
        second.broker.subscription_count() == 1
    })
    .await;
    let publisher = second.client().await;
    publisher
        .publish_confirmed("alerts", "after restart")
        .await
        .expect("publish");
    let message = within("message after reconnect", subscription.next())
        .await
        .expect("open");
    assert_eq!(message.payload(), b"after restart");
}

#[tokio::test]
async fn oversized_messages_are_refused_by_the_client_before_sending() {
    let broker = TestBroker::with(|config| config.max_frame_bytes = 1024).await;
    let client = broker.client().await;
    let error = client
        .publish("big", vec![0u8; 2048])
        .await
        .expect_err("too large");
    assert!(
        matches!(error, ClientError::TooLarge { max: 1024, .. }),
        "{error}"
    );
    client
        .publish_confirmed("big", vec![0u8; 512])
        .await
        .expect("fits");
}

#[tokio::test]
async fn publish_frames_from_a_raw_producer_keep_order_across_subjects() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let mut all = client.subscribe("seq.>").await.expect("subscribe");
    let (mut producer, _) = RawClient::hello(&broker, Role::Producer).await;
    let mut burst = Vec::new();
    for n in 0..300u32 {
        let frame = Frame::Publish(Publish {
            sequence: 0,
            message: Message::new(&format!("seq.{}", n % 7), n.to_be_bytes()).expect("valid"),
        });
        burst.extend_from_slice(&frame.to_bytes().expect("encode"));
    }
    producer.send_bytes(&burst).await;
    for n in 0..300u32 {
        let message = within("ordered", all.next()).await.expect("open");
        assert_eq!(message.payload(), n.to_be_bytes());
    }
}

/// Publisher flow control: a subscriber that reads more slowly than its publisher
/// publishes, but keeps reading, slows the publisher down instead of losing
/// messages, even with a small buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_slower_than_its_publisher_but_reading_loses_nothing() {
    const BUFFER: usize = 100;
    const MESSAGES: usize = 20_000;
    let broker = TestBroker::with(|config| config.consumer_channel_buffer_size = BUFFER).await;
    let subscriber = broker.client().await;
    let mut slow = subscriber.subscribe("flow").await.expect("subscribe");
    let publisher = broker.client().await;
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            publisher
                .publish("flow", format!("{n}"))
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
    });
    for expected in 0..MESSAGES {
        let message = within("next", slow.next()).await.expect("open");
        assert_eq!(message.payload(), format!("{expected}").as_bytes());
        if expected % 500 == 0 {
            // The subscriber is slower than the publisher: it pauses now and then.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    within("publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(slow.missed(), 0, "nothing dropped");
    assert_eq!(broker.broker.stats().snapshot().dropped_slow_consumer, 0);
}

/// Large messages to a subscriber that reads slowly but steadily: writing one batch
/// to it takes longer than 100 ms (the kernel wakes the writer only when a third of
/// its send buffer has drained), yet it is not taken for stalled (every write that
/// moves bytes, and every shrink of the socket's send queue, counts as progress), so
/// its publisher waits for it and it loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_to_a_slow_but_steady_reader_lose_nothing() {
    const MESSAGES: u32 = 300;
    const SIZE: usize = 32 * 1024;
    let broker = TestBroker::with(|config| config.consumer_channel_buffer_size = 100).await;
    let mut slow = RawClient::hello_with_receive_buffer(&broker, 32 * 1024).await;
    slow.send(&common::subscribe(1, "blobs")).await;
    assert_eq!(slow.next().await, Frame::SubscribeOk { sid: 1 });
    let publisher = broker.client().await;
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let mut payload = vec![0u8; SIZE];
            payload[..4].copy_from_slice(&n.to_be_bytes());
            publisher.publish("blobs", payload).await.expect("publish");
        }
        publisher.flush().await.expect("flush");
    });
    for expected in 0..MESSAGES {
        match slow.next_non_ping().await {
            Frame::Deliver(deliver) => {
                assert_eq!(deliver.message.payload().len(), SIZE);
                assert_eq!(deliver.message.payload()[..4], expected.to_be_bytes());
            }
            other => panic!("expected DELIVER {expected}, got {other:?}"),
        }
        // About 10 MB/s: a 50-message batch takes some 160 ms to write.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    within("publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(broker.broker.stats().snapshot().dropped_slow_consumer, 0);
}

/// Large payloads leave by vectored writes (head from the buffer, payload from the
/// shared message): mixed with small ones, every byte arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_payloads_arrive_intact_and_in_order() {
    let broker = TestBroker::start().await;
    let subscriber = broker.client().await;
    let mut first = subscriber.subscribe("blobs").await.expect("subscribe");
    let mut second = subscriber.subscribe("blobs.>").await.expect("subscribe");
    let publisher = broker.client().await;
    let sizes = [
        10usize,
        16 * 1024,
        100,
        200 * 1024,
        16 * 1024 - 1,
        64 * 1024,
        1,
    ];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(n, size)| (0..*size).map(|i| (i * 31 + n) as u8).collect())
        .collect();
    for payload in &payloads {
        publisher.publish("blobs", payload).await.expect("publish");
    }
    for payload in &payloads {
        let message = within("blob", first.next()).await.expect("open");
        assert_eq!(message.payload(), &payload[..], "{} bytes", payload.len());
    }
    publisher
        .publish("blobs.x", &payloads[3])
        .await
        .expect("publish");
    let message = within("blob", second.next()).await.expect("open");
    assert_eq!(message.payload(), &payloads[3][..]);
}

/// A subscription whose byte bound is smaller than one message still gets every
/// message (one is always let through), whole and in order, while the SDK reads the
/// socket in frames of their own size and recycles its read buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_byte_bound_smaller_than_a_message_loses_nothing() {
    const MESSAGES: u32 = 200;
    let broker = TestBroker::start().await;
    let options = ClientOptions {
        subscription_bytes: 16 * 1024,
        ..ClientOptions::default()
    };
    let subscriber = Client::connect_with(broker.address(), options)
        .await
        .expect("connect");
    let mut blobs = subscriber.subscribe("blobs").await.expect("subscribe");
    let publisher = broker.client().await;
    let size = |n: u32| {
        if n.is_multiple_of(3) {
            10
        } else {
            100 * 1024 + n as usize
        }
    };
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let mut payload = vec![n as u8; size(n)];
            payload[..4].copy_from_slice(&n.to_be_bytes());
            publisher.publish("blobs", payload).await.expect("publish");
        }
        publisher.flush().await.expect("flush");
    });
    for expected in 0..MESSAGES {
        let message = within("blob", blobs.next()).await.expect("open");
        assert_eq!(message.payload().len(), size(expected));
        assert_eq!(message.payload()[..4], expected.to_be_bytes());
        assert!(message.payload()[4..]
            .iter()
            .all(|byte| *byte == expected as u8));
    }
    within("publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(blobs.missed(), 0, "nothing dropped");
}

/// PROTOCOL.md §2: a DELIVER is 5 bytes longer than the PUBLISH it carries, so a
/// publish of exactly `max_frame_bytes` reaches the subscriber in a frame above it.
#[tokio::test]
async fn a_publish_of_exactly_the_frame_limit_is_delivered_in_a_longer_frame() {
    let broker = TestBroker::with(|config| config.max_frame_bytes = 4096).await;
    let subscriber = broker.client().await;
    let mut ticks = subscriber.subscribe("big").await.expect("subscribe");
    let publisher = broker.client().await;
    // PUBLISH body: opcode 1 + sequence 8 + subject (2 + 3) + reply-to 2 + headers 2.
    let payload = vec![7u8; 4096 - (1 + 8 + 2 + 3 + 2 + 2)];
    publisher
        .publish_confirmed("big", payload.clone())
        .await
        .expect("a frame of exactly the limit is accepted");
    let message = within("the delivery", ticks.next()).await.expect("open");
    assert_eq!(message.payload(), &payload[..]);
}

/// Issue 13, finding 2: a subscriber that reads nothing, sent large messages, holds
/// at most `CONSUMER_CHANNEL_BUFFER_BYTES` in the broker (it used to hold up to
/// `CONSUMER_CHANNEL_BUFFER_SIZE` messages: ~10 GiB at 1 MiB each); what does not
/// fit is dropped, counted and reported, and the publisher is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_with_large_messages_stays_under_its_byte_bound() {
    const BOUND: usize = 16 << 20;
    const MESSAGES: usize = 160;
    let broker = TestBroker::with(|config| {
        config.consumer_channel_buffer_bytes = BOUND;
        config.write_deadline = Duration::from_secs(60);
    })
    .await;
    let mut stuck = RawClient::hello_with_receive_buffer(&broker, 64 * 1024).await;
    stuck.send(&common::subscribe(1, "big")).await;
    assert_eq!(stuck.next().await, Frame::SubscribeOk { sid: 1 });
    let stuck_id = broker.broker.connections().list()[0].id;
    let publisher = broker.client().await;
    let payload = vec![9u8; 256 * 1024];
    let mut most_pending = 0;
    for _ in 0..MESSAGES {
        publisher
            .publish_confirmed("big", payload.clone())
            .await
            .expect("accepted: the stuck subscriber does not refuse anyone");
        let pending = broker
            .broker
            .connections()
            .list()
            .into_iter()
            .find(|info| info.id == stuck_id)
            .expect("the stuck subscriber is still connected")
            .pending_bytes;
        most_pending = most_pending.max(pending);
    }
    assert!(
        most_pending <= BOUND,
        "held {most_pending} bytes for a subscriber bounded at {BOUND}"
    );
    wait_until("drops counted", || {
        broker.broker.stats().snapshot().dropped_slow_consumer > 0
    })
    .await;
}
