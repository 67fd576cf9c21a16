//! Durable queues (`STORE_URL=file://…`) against the real broker: queues and
//! their messages survive a restart in order, unacked ones flagged redelivered; a
//! kill -9 loop loses no confirmed message and flags every duplicate; a full disk
//! refuses publishes with STORAGE_FAILED and keeps what was confirmed; a bad URL
//! or a directory another broker holds stops startup naming STORE_URL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{spawn_server, wait_for_ready_line, within, TestBroker};
use tern_broker::store::{FsyncPolicy, StoreUrl};
use tern_client::{Client, ClientError, ClientOptions, ReconnectPolicy};
use tern_proto::ErrorCode;

fn durable(dir: &std::path::Path) -> impl FnOnce(&mut tern_broker::Config) {
    let url = StoreUrl::File(dir.to_path_buf());
    move |config| {
        config.store_url = url;
        config.store_fsync = FsyncPolicy::Always;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_their_messages_survive_a_restart_in_order_with_unacked_ones_redelivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = TestBroker::with(durable(dir.path())).await;
    let client = broker.client().await;
    let mut work = client
        .queue_subscribe_bound("work", "jobs.*", 2)
        .await
        .expect("queue");
    for n in 0..10 {
        client
            .publish_confirmed(&format!("jobs.{n}"), format!("job {n}"))
            .await
            .expect("confirmed");
    }
    // Two are acked, two stay unacked when the broker stops.
    for _ in 0..2 {
        let delivery = within("delivery", work.next()).await.expect("delivered");
        delivery.ack().await.expect("acked");
    }
    let held = [
        within("delivery", work.next()).await.expect("delivered"),
        within("delivery", work.next()).await.expect("delivered"),
    ];
    client.flush().await.expect("acks written");
    drop(work);
    client.close().await;
    drop(held);
    broker.shutdown().await;

    let broker = TestBroker::with(durable(dir.path())).await;
    let queue = broker.broker.queue("work").expect("the queue exists again");
    assert_eq!(queue.pattern(), "jobs.*", "with its binding");
    assert_eq!(queue.depth().ready, 8);
    let client = broker.client().await;
    let mut work = client.queue_subscribe("work", 100).await.expect("queue");
    let mut got = Vec::new();
    for _ in 0..8 {
        let delivery = within("delivery", work.next()).await.expect("delivered");
        got.push((
            String::from_utf8_lossy(delivery.payload()).into_owned(),
            delivery.is_redelivered(),
        ));
        delivery.ack().await.expect("acked");
    }
    let expected: Vec<(String, bool)> = (2..10).map(|n| (format!("job {n}"), n < 4)).collect();
    assert_eq!(
        got, expected,
        "in order; the two unacked ones flagged redelivered"
    );
    // A publish after the restart reaches the recovered binding.
    client
        .publish_confirmed("jobs.x", "after")
        .await
        .expect("confirmed");
    let delivery = within("delivery", work.next()).await.expect("delivered");
    assert_eq!(delivery.payload(), b"after".as_slice());
    delivery.ack().await.expect("acked");
    client.flush().await.expect("flushed");
    broker.shutdown().await;
}

/// What the kill loop saw, across every life of the broker.
#[derive(Default)]
struct Seen {
    confirmed: BTreeSet<u64>,
    /// Each receipt of a message: whether it was flagged redelivered.
    received: BTreeMap<u64, Vec<bool>>,
}

async fn run_publishers(
    client: Arc<Client>,
    next: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    // A window of 16 confirms in flight.
    for _ in 0..16 {
        let (client, next, seen, stop) = (client.clone(), next.clone(), seen.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let id = next.fetch_add(1, Ordering::AcqRel);
                match client.publish_confirmed("work", id.to_string()).await {
                    Ok(()) => {
                        seen.lock().expect("seen").confirmed.insert(id);
                    }
                    Err(_) => return,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_consumer(mut work: tern_client::QueueSubscription, seen: Arc<Mutex<Seen>>) {
    while let Some(delivery) = work.next().await {
        let Ok(id) = String::from_utf8_lossy(delivery.payload()).parse::<u64>() else {
            continue;
        };
        seen.lock()
            .expect("seen")
            .received
            .entry(id)
            .or_default()
            .push(delivery.is_redelivered());
        if delivery.ack().await.is_err() {
            return;
        }
    }
}

async fn connect(address: &str) -> Arc<Client> {
    let options = ClientOptions::default().reconnect(ReconnectPolicy::disabled());
    Arc::new(
        Client::connect_with(address, options)
            .await
            .expect("connect to the binary"),
    )
}

/// `kill -9` the real binary at random moments while confirmed publishers and an
/// acking consumer run; restart it on the same directory. Every confirmed message
/// is delivered at least once, and every repeat delivery is flagged redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_loses_no_confirmed_message_and_flags_every_duplicate() {
    // 20 in CI; `benches/kill-loop.sh` runs many more.
    let cycles: u64 = std::env::var("TERN_KILL_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let next = Arc::new(AtomicU64::new(0));
    let mut random: u64 = 0x9E37_79B9_7F4A_7C15;
    for cycle in 0..=cycles {
        let mut child = spawn_server(&[("STORE_URL", url.as_str()), ("STORE_FSYNC", "always")]);
        let (tcp, _, log) = wait_for_ready_line(&mut child);
        // Keep reading the log so the broker never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut { log }, &mut std::io::sink()));
        let publisher = connect(&tcp).await;
        let consumer = connect(&tcp).await;
        let stop = Arc::new(AtomicBool::new(false));
        // The queue exists (bound) before anything is published to it.
        let work = consumer
            .queue_subscribe_bound("work", "work", 64)
            .await
            .expect("queue");
        let publishing = tokio::spawn(run_publishers(
            publisher.clone(),
            next.clone(),
            seen.clone(),
            stop.clone(),
        ));
        let consuming = tokio::spawn(run_consumer(work, seen.clone()));
        if cycle < cycles {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            tokio::time::sleep(Duration::from_millis(100 + random % 400)).await;
            let status = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            let _ = within("publishers end", publishing).await;
            let _ = within("consumer ends", consuming).await;
            continue;
        }
        // The last life: no more publishing; everything confirmed comes through.
        stop.store(true, Ordering::Release);
        let _ = within("publishers end", publishing).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let missing: Vec<u64> = {
                let seen = seen.lock().expect("seen");
                seen.confirmed
                    .iter()
                    .filter(|id| !seen.received.contains_key(id))
                    .copied()
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "confirmed messages never delivered: {} of them, first {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        consuming.abort();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    let seen = seen.lock().expect("seen");
    assert!(
        seen.confirmed.len() > 100,
        "the loop confirmed enough to mean something ({})",
        seen.confirmed.len()
    );
    for (id, receipts) in &seen.received {
        assert!(
            receipts.iter().skip(1).all(|redelivered| *redelivered),
            "message {id} was delivered again without the redelivered flag: {receipts:?}"
        );
    }
    let repeated = seen
        .received
        .values()
        .filter(|receipts| receipts.len() > 1)
        .count();
    println!(
        "kill -9 loop: {cycles} kills, {} confirmed, {} delivered, {repeated} delivered more than once (every repeat flagged redelivered)",
        seen.confirmed.len(),
        seen.received.len()
    );
}

/// A tmpfs of a few hundred KiB fills up: publishes get STORAGE_FAILED, the broker
/// keeps serving, and what was confirmed is all there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_storage_failed_and_keeps_what_was_confirmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=512k",
            "tern-test",
            &dir.path().display().to_string(),
        ])
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs to fill a real file system (needs root, as CI has)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let configure = |config: &mut tern_broker::Config| {
        durable(dir.path())(config);
        config.store_segment_bytes = 64 << 10;
    };
    let broker = TestBroker::with(configure).await;
    let client = broker.client().await;
    // A queue with no consumer keeps every message.
    drop(
        client
            .queue_subscribe_bound("full", "full", 1)
            .await
            .expect("queue"),
    );
    let mut confirmed = 0;
    let refusal = loop {
        match client.publish_confirmed("full", vec![b'x'; 16 << 10]).await {
            Ok(()) => confirmed += 1,
            Err(error) => break error,
        }
        assert!(confirmed < 1000, "the disk never filled");
    };
    assert!(
        matches!(
            &refusal,
            ClientError::Refused { code, .. } if *code == ErrorCode::StorageFailed.as_u16()
        ),
        "{refusal:?}"
    );
    assert!(confirmed > 5, "some fitted ({confirmed})");
    // The broker serves on: broadcast works, and the queue is still there.
    let mut subscription = client.subscribe("still.here").await.expect("subscribe");
    client.publish("still.here", "yes").await.expect("publish");
    assert_eq!(
        within("broadcast", subscription.next())
            .await
            .expect("message")
            .payload(),
        b"yes".as_slice()
    );
    client.close().await;
    broker.shutdown().await;

    let broker = TestBroker::with(configure).await;
    let queue = broker.broker.queue("full").expect("recovered");
    assert!(
        queue.depth().ready >= confirmed,
        "every confirmed message is back ({} of {confirmed})",
        queue.depth().ready
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_store_url_or_a_directory_another_broker_holds_stops_startup_naming_store_url() {
    for url in ["s3://bucket", "file://", "redis://localhost"] {
        let stderr = common::serve_and_fail(&[("STORE_URL", url)]);
        assert!(stderr.contains("STORE_URL"), "{url}: {stderr}");
    }
    let stderr = common::serve_and_fail(&[("STORE_URL", "file:///proc/tern-cannot-write-here")]);
    assert!(stderr.contains("STORE_URL"), "{stderr}");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    let first = TestBroker::with(durable(dir.path())).await;
    let stderr = common::serve_and_fail(&[("STORE_URL", url.as_str())]);
    assert!(
        stderr.contains("STORE_URL") && stderr.contains("locked"),
        "{stderr}"
    );
    first.shutdown().await;
}

/// A queue whose log is damaged inside (not a torn tail) is not loaded: the broker
/// names the file and offset on `/healthz`, serves the other queues, and leaves the
/// damaged files untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_is_reported_on_healthz_and_the_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = TestBroker::with(durable(dir.path())).await;
    let client = broker.client().await;
    for queue in ["damaged", "intact"] {
        drop(
            client
                .queue_subscribe_bound(queue, queue, 1)
                .await
                .expect("queue"),
        );
        for n in 0..3 {
            client
                .publish_confirmed(queue, format!("{queue} {n}"))
                .await
                .expect("confirmed");
        }
    }
    client.close().await;
    broker.shutdown().await;

    // Flip a byte inside the first record of the damaged queue's log.
    let damaged_dir = std::fs::read_dir(dir.path())
        .expect("listed")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            std::fs::read_to_string(path.join("queue.meta"))
                .is_ok_and(|meta| meta.contains("\"damaged\""))
        })
        .expect("the damaged queue's directory");
    let segment = damaged_dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes[20] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("damaged");

    let broker = TestBroker::with(durable(dir.path())).await;
    assert!(broker.broker.queue("damaged").is_none(), "not loaded");
    let (status, body) = common::http_get(broker.http, "/healthz").await;
    assert_eq!(status, 200, "liveness holds: restarting would not help");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "degraded");
    let failed = &health["store"]["failed_to_load"][0];
    assert_eq!(failed["name"], "damaged");
    let error = failed["error"].as_str().expect("error text");
    assert!(
        error.contains("00000000000000000000.log") && error.contains("offset 0"),
        "{error}"
    );
    let client = broker.client().await;
    let mut intact = client.queue_subscribe("intact", 10).await.expect("queue");
    let first = within("delivery", intact.next()).await.expect("delivered");
    assert_eq!(first.payload(), b"intact 0".as_slice());
    let (_, metrics) = common::http_get(broker.http, "/metrics").await;
    assert!(
        metrics.contains("tern_store_errors_total{kind=\"load\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tern_queue_disk_bytes{queue=\"intact\"}"));
    assert_eq!(
        std::fs::read(&segment).expect("kept"),
        bytes,
        "the damaged file is left as it was"
    );
    client.close().await;
    broker.shutdown().await;
}

/// Messages waiting in a queue for a filtered consumer that matches them survive a
/// restart, and reach the matching consumer that attaches afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_matching_filter_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = TestBroker::with(durable(dir.path())).await;
    let client = broker.client().await;
    let mut device_a = client
        .queue_subscribe_filtered("events", "user.event", 10, "device_id = 'a'")
        .await
        .expect("filtered consumer");
    for (device, payload) in [("a", "for a"), ("b", "for b 1"), ("b", "for b 2")] {
        let message = tern_client::OutgoingMessage::new("user.event", payload.as_bytes().to_vec())
            .header("device_id", device);
        client.send_confirmed(message).await.expect("confirmed");
    }
    let delivery = within("delivery", device_a.next())
        .await
        .expect("delivered");
    assert_eq!(delivery.payload(), b"for a".as_slice());
    delivery.ack().await.expect("acked");
    client.flush().await.expect("flushed");
    drop(device_a);
    client.close().await;
    broker.shutdown().await;

    let broker = TestBroker::with(durable(dir.path())).await;
    assert_eq!(
        broker
            .broker
            .queue("events")
            .expect("recovered")
            .depth()
            .ready,
        2
    );
    let client = broker.client().await;
    let mut device_b = client
        .queue_subscribe_filtered("events", "user.event", 10, "device_id = 'b'")
        .await
        .expect("filtered consumer");
    for expected in ["for b 1", "for b 2"] {
        let delivery = within("delivery", device_b.next())
            .await
            .expect("delivered");
        assert_eq!(delivery.payload(), expected.as_bytes());
        delivery.ack().await.expect("acked");
    }
    client.close().await;
    broker.shutdown().await;
}
