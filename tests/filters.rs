//! Header filters (protocol version 2): SUBSCRIBE_FILTERED on the wire, the SDK's
//! `subscribe_filtered`, `tern sub --filter`, and version 1 clients unchanged.

mod common;

use std::time::Duration;

use common::{within, RawClient, TestBroker};
use tern_client::{ClientError, OutgoingMessage};
use tern_proto::{
    DeliveryMode, ErrorCode, Frame, Hello, Message, Publish, Role, Subscribe, SubscribeFiltered,
};

async fn hello(broker: &TestBroker, version: u16) -> (RawClient, u16) {
    let mut client = RawClient::connect(broker).await;
    client
        .send(&Frame::Hello(Hello {
            version,
            role: Role::Both,
            client_name: "filters".into(),
            auth_token: "".into(),
        }))
        .await;
    match client.next().await {
        Frame::Welcome(welcome) => (client, welcome.version),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn filtered(sid: u32, pattern: &str, filter: &str) -> Frame {
    Frame::SubscribeFiltered(SubscribeFiltered {
        subscribe: Subscribe {
            sid,
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 0,
            pattern: pattern.into(),
            queue: None,
        },
        filter: filter.into(),
    })
}

fn event(sequence: u64, profile: &str, device: &str, payload: &str) -> Frame {
    Frame::Publish(Publish {
        sequence,
        message: Message::encode(
            "user.event.delivery",
            None,
            &[
                tern_proto::Header::new("profile_id", profile),
                tern_proto::Header::new("device_id", device),
            ],
            payload.as_bytes(),
        )
        .expect("valid"),
    })
}

#[tokio::test]
async fn the_server_speaks_version_2_and_a_version_1_connection_does_not_get_filters() {
    let broker = TestBroker::start().await;
    let (_, version) = hello(&broker, 2).await;
    assert_eq!(version, 2);
    let (mut old, version) = hello(&broker, 1).await;
    assert_eq!(version, 1);
    old.send(&filtered(1, "a", "x = '1'")).await;
    let (_, message) = old.expect_error(ErrorCode::UnknownOpcode).await;
    assert!(message.contains("version 2"), "{message}");
    old.expect_alive().await;
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_its_position_and_the_connection_stays() {
    let broker = TestBroker::start().await;
    let (mut client, _) = hello(&broker, 2).await;
    client.send(&filtered(7, "a", "device = d1")).await;
    let (context, message) = client.expect_error(ErrorCode::InvalidFilter).await;
    assert_eq!(context, 7);
    assert!(message.contains("at byte 9"), "{message}");
    client.expect_alive().await;
    assert_eq!(broker.broker.subscription_count(), 0);
}

/// The payloads of the next `count` frames, which must be deliveries, then proof
/// that nothing else came.
async fn payloads(client: &mut RawClient, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..count {
        match client.next().await {
            Frame::Deliver(deliver) => {
                got.push(String::from_utf8_lossy(deliver.message.payload()).into_owned())
            }
            other => panic!("expected DELIVER, got {other:?}"),
        }
    }
    client.expect_alive().await;
    got
}

/// Each device's subscription gets exactly its own events, in order; an
/// unfiltered subscription on the same subject gets all of them.
#[tokio::test]
async fn each_filtered_subscription_gets_only_the_messages_that_match() {
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let (mut d1, _) = hello(&broker, 2).await;
    d1.send(&filtered(
        1,
        "user.event.*",
        "profile_id = 'u1' AND device_id = 'd1'",
    ))
    .await;
    assert_eq!(d1.next().await, Frame::SubscribeOk { sid: 1 });
    let (mut d2, _) = hello(&broker, 2).await;
    d2.send(&filtered(1, "user.event.delivery", "device_id IN ('d2')"))
        .await;
    assert_eq!(d2.next().await, Frame::SubscribeOk { sid: 1 });
    let (mut all, _) = hello(&broker, 1).await;
    all.send(&common::subscribe(1, "user.event.delivery")).await;
    assert_eq!(all.next().await, Frame::SubscribeOk { sid: 1 });

    let (mut publisher, _) = hello(&broker, 1).await;
    let events = [("u1", "d1"), ("u1", "d2"), ("u2", "d1"), ("u1", "d1")];
    for (n, (profile, device)) in events.iter().enumerate() {
        publisher
            .send(&event(n as u64 + 1, profile, device, &format!("{n}")))
            .await;
        assert_eq!(
            publisher.next().await,
            Frame::PublishOk {
                sequence: n as u64 + 1
            }
        );
    }
    assert_eq!(payloads(&mut d1, 2).await, ["0", "3"]);
    assert_eq!(payloads(&mut d2, 1).await, ["1"]);
    assert_eq!(payloads(&mut all, 4).await, ["0", "1", "2", "3"]);
}

/// A request whose only possible responder has a filter that does not match gets
/// NO_RESPONDERS at once; one that matches gets its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_decides_whether_a_request_has_responders() {
    let broker = TestBroker::start().await;
    let responder = broker.client().await;
    let mut requests = responder
        .subscribe_filtered("svc.echo", "tenant = 'a'")
        .await
        .expect("subscribe");
    let serving = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(request) = requests.next().await {
                responder.respond(&request, "pong").await.expect("reply");
            }
        }
    });
    let client = broker.client().await;
    let to_b = OutgoingMessage::new("svc.echo", "ping").header("tenant", "b");
    assert!(matches!(
        client.request_message(to_b, Duration::from_secs(5)).await,
        Err(ClientError::NoResponders { .. })
    ));
    let to_a = OutgoingMessage::new("svc.echo", "ping").header("tenant", "a");
    let reply = client
        .request_message(to_a, Duration::from_secs(5))
        .await
        .expect("a reply");
    assert_eq!(reply.payload(), b"pong");
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_checks_filters_before_sending_them() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    match client.subscribe_filtered("a", "x = 'unterminated").await {
        Err(ClientError::InvalidFilter(error)) => assert_eq!(error.position, 4),
        other => panic!("expected InvalidFilter, got {other:?}"),
    }
    assert_eq!(client.server_info().expect("connected").version, 2);
    let mut mine = client
        .subscribe_filtered("orders", "region = 'eu'")
        .await
        .expect("subscribe");
    let publisher = broker.client().await;
    for region in ["us", "eu"] {
        publisher
            .send_confirmed(OutgoingMessage::new("orders", region).header("region", region))
            .await
            .expect("published");
    }
    let message = within("the eu order", mine.next()).await.expect("open");
    assert_eq!(message.payload(), b"eu");
    assert!(mine.try_next().is_none(), "the us order was filtered out");
}

fn device_event(profile: &str, device: &str, n: usize) -> OutgoingMessage {
    OutgoingMessage::new("user.event.delivery", format!("{device}:{n}"))
        .header("profile_id", profile)
        .header("device_id", device)
}

/// The chat gateway's flow on one queue: each device's consumer gets exactly its
/// own events, in order; a device that does not ack (prefetch 1, stuck) holds up
/// nobody else; a device that connects late gets what was published for it while
/// it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_consumers_with_filters_get_their_own_messages_without_head_of_line_blocking() {
    const EVENTS: usize = 20;
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let gateway = broker.client().await;
    let filter = |device: &str| format!("profile_id = 'u1' AND device_id = '{device}'");
    let mut d1 = gateway
        .queue_subscribe_filtered("user.event.delivery", "", 8, &filter("d1"))
        .await
        .expect("d1");
    let mut stuck = gateway
        .queue_subscribe_filtered("user.event.delivery", "", 1, &filter("stuck"))
        .await
        .expect("stuck");
    let publisher = broker.client().await;
    for n in 0..EVENTS {
        for device in ["stuck", "d1", "late"] {
            publisher
                .send_confirmed(device_event("u1", device, n))
                .await
                .expect("stored");
        }
    }
    for n in 0..EVENTS {
        let delivery = within("d1's next event", d1.next()).await.expect("open");
        assert_eq!(delivery.payload(), format!("d1:{n}").as_bytes());
        delivery.ack().await.expect("ack");
    }
    // The stuck device holds one delivery, unacked; its other events wait for it.
    let held = within("stuck's first event", stuck.next())
        .await
        .expect("open");
    assert_eq!(held.payload(), b"stuck:0");
    let queue = broker.broker.queue("user.event.delivery").expect("exists");
    assert_eq!(
        queue.depth().ready,
        2 * EVENTS - 1,
        "late's and stuck's wait"
    );

    let mut late = gateway
        .queue_subscribe_filtered("user.event.delivery", "", 64, &filter("late"))
        .await
        .expect("late");
    for n in 0..EVENTS {
        let delivery = within("late's next event", late.next())
            .await
            .expect("open");
        assert_eq!(delivery.payload(), format!("late:{n}").as_bytes());
        assert!(!delivery.is_redelivered());
        delivery.ack().await.expect("ack");
    }
    gateway.flush().await.expect("acks processed");
    assert_eq!(
        queue.depth().unacked,
        1,
        "nothing twice: only stuck's held event is out"
    );
    // Requeued, it comes back to a consumer of the same filter, flagged.
    held.nack(true).await.expect("nack");
    let again = within("the requeued event", stuck.next())
        .await
        .expect("open");
    assert_eq!(again.payload(), b"stuck:0");
    assert!(again.is_redelivered());
}

/// Filtered and unfiltered consumers of one queue: every message goes to exactly
/// one consumer whose filter matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_to_exactly_one_matching_consumer() {
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let client = broker.client().await;
    let mut any = client.queue_subscribe("jobs", 1000).await.expect("any");
    let mut eu = client
        .queue_subscribe_filtered("jobs", "", 1000, "region = 'eu'")
        .await
        .expect("eu");
    let publisher = broker.client().await;
    for n in 0..200 {
        let region = if n % 2 == 0 { "eu" } else { "us" };
        publisher
            .send_confirmed(OutgoingMessage::new("jobs", format!("{n}")).header("region", region))
            .await
            .expect("stored");
    }
    publisher.flush().await.expect("flush");
    let mut seen = std::collections::HashSet::new();
    let mut from_eu = 0;
    while seen.len() < 200 {
        tokio::select! {
            Some(delivery) = any.next() => {
                assert!(seen.insert(delivery.payload().to_vec()), "delivered twice");
                delivery.ack().await.expect("ack");
            }
            Some(delivery) = eu.next() => {
                assert_eq!(delivery.message().header("region"), Some("eu"));
                assert!(seen.insert(delivery.payload().to_vec()), "delivered twice");
                from_eu += 1;
                delivery.ack().await.expect("ack");
            }
        }
    }
    assert!(from_eu > 0, "the filtered consumer took its share");
    assert_eq!(
        broker.broker.queue("jobs").expect("exists").depth().ready,
        0
    );
}
