//! What the SDK promises across a lost connection (see the tern-client crate docs).

mod common;

use std::time::Duration;

use common::{test_config, wait_until, within, TestBroker};
use tern_client::{Client, ClientError, ClientOptions, ReconnectPolicy};

fn quick_reconnect() -> ClientOptions {
    ClientOptions::default().reconnect(ReconnectPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..ReconnectPolicy::default()
    })
}

/// A second broker on the first one's port, as after a restart.
async fn restart(
    first: TestBroker,
    configure: impl FnOnce(&mut tern_broker::Config),
) -> TestBroker {
    let port = first.tcp.port();
    first.shutdown().await;
    let mut config = test_config();
    config.tcp_port = port;
    configure(&mut config);
    TestBroker::from_config(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_made_while_disconnected_are_sent_after_reconnecting() {
    let first = TestBroker::start().await;
    let publisher = Client::connect_with(first.address(), quick_reconnect())
        .await
        .expect("connect");
    let second_port = first.tcp.port();
    first.shutdown().await;
    wait_until("the publisher noticed", || !publisher.is_connected()).await;
    // The broker is down: these are buffered, not lost.
    for n in 0..3 {
        publisher
            .publish("outbox", format!("while-down-{n}"))
            .await
            .expect("buffered");
    }
    // The new broker holds messages for subjects nobody listens to yet.
    let mut config = test_config();
    config.tcp_port = second_port;
    config.delivery_mode = tern_proto::DeliveryMode::Queue;
    let second = TestBroker::from_config(config).await;
    wait_until("reconnected", || publisher.is_connected()).await;
    wait_until("buffered publishes arrived", || {
        second.broker.stats().snapshot().published == 3
    })
    .await;
    let consumer = second.client().await;
    let mut queue = consumer
        .queue_subscribe("outbox", 10)
        .await
        .expect("subscribe");
    for n in 0..3 {
        let delivery = within("buffered message", queue.next())
            .await
            .expect("open");
        assert_eq!(
            std::str::from_utf8(delivery.payload()).expect("utf-8"),
            format!("while-down-{n}")
        );
        delivery.ack().await.expect("ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_from_a_previous_connection_cannot_be_acked_and_comes_again() {
    let first = TestBroker::with(|config| config.shutdown_grace = Duration::ZERO).await;
    let consumer = Client::connect_with(first.address(), quick_reconnect())
        .await
        .expect("connect");
    let mut queue = consumer
        .queue_subscribe("work", 5)
        .await
        .expect("subscribe");
    first
        .client()
        .await
        .publish_confirmed("work", "job-1")
        .await
        .expect("queued");
    let stale = within("first delivery", queue.next()).await.expect("open");
    // The broker restarts (in-memory: job-1 is gone with it).
    let second = restart(first, |_| {}).await;
    wait_until("resubscribed", || second.broker.subscription_count() == 1).await;
    assert!(matches!(stale.ack().await, Err(ClientError::StaleDelivery)));
    // The same subscription keeps working on the new connection.
    second
        .client()
        .await
        .publish_confirmed("work", "job-2")
        .await
        .expect("queued");
    let fresh = within("delivery after reconnect", queue.next())
        .await
        .expect("open");
    assert_eq!(fresh.payload(), b"job-2");
    fresh.ack().await.expect("ack on the current connection");
}

#[tokio::test]
async fn a_client_that_may_not_reconnect_closes_and_ends_its_streams() {
    let broker = TestBroker::start().await;
    let options = ClientOptions::default().reconnect(ReconnectPolicy::disabled());
    let client = Client::connect_with(broker.address(), options)
        .await
        .expect("connect");
    let mut subscription = client.subscribe("anything").await.expect("subscribe");
    broker.shutdown().await;
    assert!(within("stream ends", subscription.next()).await.is_none());
    wait_until("client closed", || client.is_closed()).await;
    assert!(matches!(
        client.publish("x", "y").await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn a_refused_handshake_is_reported_with_its_code() {
    let broker = TestBroker::with(|config| config.max_connections = 1).await;
    let _first = broker.client().await;
    let error = Client::connect(broker.address())
        .await
        .expect_err("over the limit");
    assert!(matches!(error, ClientError::Handshake { .. }), "{error}");
    assert_eq!(
        error.code(),
        Some(tern_client::ErrorCode::TooManyConnections)
    );
    assert!(
        error.to_string().contains("TOO_MANY_CONNECTIONS"),
        "{error}"
    );
}
