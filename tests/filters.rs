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
