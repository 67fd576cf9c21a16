//! `GET /metrics`: the Prometheus exposition moves with the traffic.

mod common;

use std::collections::HashMap;

use common::{http_get, wait_until, within, RawClient, TestBroker};
use tern_client::ErrorCode;
use tern_proto::DeliveryMode;

/// Scrapes `/metrics` into `series → value` (`name{labels}` as exposed).
async fn scrape(broker: &TestBroker) -> HashMap<String, f64> {
    let (status, body) = http_get(broker.http, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            (series.to_owned(), value.parse().expect("numeric value"))
        })
        .collect()
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {metrics:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_gauges_follow_broadcast_queue_and_request_traffic() {
    let broker = TestBroker::start().await;
    let before = scrape(&broker).await;
    assert_eq!(value(&before, "tern_messages_published_total"), 0.0);
    assert_eq!(value(&before, "tern_connections"), 0.0);
    assert_eq!(value(&before, "tern_ready"), 1.0);

    let subscriber = broker.client().await;
    let mut ticks = subscriber.subscribe("ticks").await.expect("subscribe");
    let consumer = broker.client().await;
    let mut jobs = consumer.queue_subscribe("jobs", 16).await.expect("queue");
    let publisher = broker.client().await;
    for n in 0..10 {
        publisher
            .publish("ticks", format!("tick-{n}"))
            .await
            .expect("publish");
    }
    // Confirmed: each waits for its PUBLISH_OK, so each (after the first) is alone
    // in its read batch and becomes a latency sample.
    for n in 0..4 {
        publisher
            .publish_confirmed("jobs", format!("job-{n}"))
            .await
            .expect("publish");
    }
    publisher
        .publish("nobody.listens", "x")
        .await
        .expect("publish");
    let refused = publisher
        .request("nobody.answers", "?", std::time::Duration::from_secs(5))
        .await;
    assert!(
        matches!(&refused, Err(error) if error.code() == Some(ErrorCode::NoResponders)),
        "{refused:?}"
    );
    for _ in 0..10 {
        within("tick", ticks.next()).await.expect("open");
    }
    // Ack two, reject one (dropped), requeue one (redelivered, then left unacked).
    for n in 0..4 {
        let delivery = within("job", jobs.next()).await.expect("open");
        match n {
            0 | 1 => delivery.ack().await.expect("ack"),
            2 => delivery.nack(false).await.expect("reject"),
            _ => delivery.nack(true).await.expect("requeue"),
        }
    }
    let redelivery = within("redelivery", jobs.next()).await.expect("open");
    assert!(redelivery.is_redelivered());
    consumer.flush().await.expect("flush acks");
    wait_until("counters settle", || {
        let stats = broker.broker.stats().snapshot();
        stats.delivered_queue == 5 && stats.dropped_rejected == 1 && stats.delivered_broadcast == 10
    })
    .await;

    let metrics = scrape(&broker).await;
    assert_eq!(value(&metrics, "tern_messages_published_total"), 15.0);
    assert_eq!(
        value(
            &metrics,
            "tern_messages_delivered_total{mode=\"broadcast\"}"
        ),
        10.0
    );
    assert_eq!(
        value(&metrics, "tern_messages_delivered_total{mode=\"queue\"}"),
        5.0
    );
    assert_eq!(value(&metrics, "tern_messages_redelivered_total"), 1.0);
    assert_eq!(
        value(
            &metrics,
            "tern_messages_dropped_total{mode=\"broadcast\",reason=\"no_interest\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            "tern_messages_dropped_total{mode=\"queue\",reason=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            "tern_publish_errors_total{code=\"NO_RESPONDERS\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&metrics, "tern_publish_errors_total{code=\"QUEUE_FULL\"}"),
        0.0
    );
    assert!(value(&metrics, "tern_received_bytes_total") > 0.0);
    assert!(value(&metrics, "tern_sent_bytes_total") > 0.0);
    assert_eq!(value(&metrics, "tern_connections"), 3.0);
    // `ticks`, plus the SDK's reply inbox that `request` subscribed.
    assert_eq!(
        value(&metrics, "tern_subscriptions{mode=\"broadcast\"}"),
        2.0
    );
    assert_eq!(value(&metrics, "tern_subscriptions{mode=\"queue\"}"), 1.0);
    assert_eq!(value(&metrics, "tern_queues"), 1.0);
    assert_eq!(value(&metrics, "tern_queue_depth{queue=\"jobs\"}"), 0.0);
    assert_eq!(value(&metrics, "tern_queue_unacked{queue=\"jobs\"}"), 1.0);
    assert_eq!(value(&metrics, "tern_queue_consumers{queue=\"jobs\"}"), 1.0);
    // The first publish of each read batch is a latency sample.
    let broadcast_samples = value(
        &metrics,
        "tern_delivery_latency_seconds_count{mode=\"broadcast\"}",
    );
    assert!(
        (1.0..=10.0).contains(&broadcast_samples),
        "{broadcast_samples}"
    );
    assert!(
        value(
            &metrics,
            "tern_delivery_latency_seconds_count{mode=\"queue\"}"
        ) >= 1.0
    );
    assert_eq!(
        value(
            &metrics,
            "tern_delivery_latency_seconds_bucket{le=\"+Inf\",mode=\"broadcast\"}"
        ),
        broadcast_samples
    );
}

#[tokio::test]
async fn queue_depth_and_close_reasons_are_exposed() {
    let broker = TestBroker::with(|config| config.delivery_mode = DeliveryMode::Queue).await;
    let publisher = broker.client().await;
    for n in 0..5 {
        publisher
            .publish_confirmed("held", format!("m{n}"))
            .await
            .expect("stored");
    }
    let mut garbage = RawClient::connect(&broker).await;
    garbage.send_bytes(&[0, 0, 0, 1, 0xEE]).await;
    while garbage.try_next().await.is_some() {}
    publisher.close().await;
    wait_until("both connections closed", || {
        broker.broker.connection_count() == 0
    })
    .await;

    let metrics = scrape(&broker).await;
    assert_eq!(value(&metrics, "tern_queue_depth{queue=\"held\"}"), 5.0);
    assert_eq!(value(&metrics, "tern_queue_unacked{queue=\"held\"}"), 0.0);
    assert_eq!(value(&metrics, "tern_queue_consumers{queue=\"held\"}"), 0.0);
    assert_eq!(
        value(
            &metrics,
            "tern_connections_closed_total{reason=\"protocol_violation\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            "tern_connections_closed_total{reason=\"client_closed\"}"
        ),
        1.0
    );
    assert_eq!(value(&metrics, "tern_connections_accepted_total"), 2.0);
}

#[tokio::test]
async fn a_full_queue_is_counted_as_a_publish_error_by_code() {
    let broker = TestBroker::with(|config| {
        config.delivery_mode = DeliveryMode::Queue;
        config.queue_max_messages = 1;
    })
    .await;
    let publisher = broker.client().await;
    publisher
        .publish_confirmed("tiny", "first")
        .await
        .expect("stored");
    let second = publisher.publish_confirmed("tiny", "second").await;
    assert!(
        matches!(&second, Err(error) if error.code() == Some(ErrorCode::QueueFull)),
        "{second:?}"
    );
    let metrics = scrape(&broker).await;
    assert_eq!(
        value(&metrics, "tern_publish_errors_total{code=\"QUEUE_FULL\"}"),
        1.0
    );
    assert_eq!(value(&metrics, "tern_messages_published_total"), 1.0);
}
