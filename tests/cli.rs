//! The CLI end to end, with the built binary against a broker on port 0, as the
//! README shows it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{wait_until, within, TestBroker};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn tern(broker: &TestBroker) -> Command {
    let mut command = Command::new(TERN);
    command
        .env("TERN_SERVER", broker.address())
        .env_remove("RUST_LOG");
    command
}

/// Runs `tern ARGS` against the broker to completion.
fn run(broker: &TestBroker, args: &[&str]) -> std::process::Output {
    tern(broker).args(args).output().expect("run tern")
}

async fn finish(child: std::process::Child) -> std::process::Output {
    within(
        "the command to finish",
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("join")
    .expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_print_messages_one_per_line() {
    let broker = TestBroker::start().await;
    let subscriber = tern(&broker)
        .args(["sub", "greetings.*", "--count", "3", "--headers"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sub");
    wait_until("sub subscribed", || broker.broker.subscription_count() == 1).await;
    let output = run(
        &broker,
        &["pub", "greetings.en", "hello", "--header", "lang=en"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut publisher = tern(&broker)
        .args(["pub", "greetings.fr"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("pub");
    publisher
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"bonjour\nsalut\n")
        .expect("write stdin");
    assert!(finish(publisher).await.status.success());
    let output = finish(subscriber).await;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "lang: en\nhello\nbonjour\nsalut\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_with_a_queue_acks_what_it_prints() {
    let broker = TestBroker::start().await;
    let subscriber = tern(&broker)
        .args(["sub", "jobs", "--queue", "jobs", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sub");
    wait_until("queue consumer attached", || {
        broker.broker.subscription_count() == 1
    })
    .await;
    for job in ["resize", "crop"] {
        let output = run(&broker, &["pub", "jobs", job, "--confirm"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = finish(subscriber).await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "resize\ncrop\n");
    let queue = broker.broker.queue("jobs").expect("queue");
    wait_until("acked", || {
        queue.depth().unacked == 0 && queue.depth().ready == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_prints_the_reply_of_tern_reply() {
    let broker = TestBroker::start().await;
    let responder = tern(&broker)
        .args(["reply", "svc.time", "noon", "--count", "1"])
        .spawn()
        .expect("reply");
    wait_until("responder subscribed", || {
        broker.broker.subscription_count() == 1
    })
    .await;
    let output = run(&broker, &["req", "svc.time", "what time is it?"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "noon\n");
    assert!(finish(responder).await.status.success());

    let echo = tern(&broker)
        .args(["reply", "svc.echo", "--count", "1"])
        .spawn()
        .expect("reply");
    wait_until("echo subscribed", || {
        broker.broker.subscription_count() == 1
    })
    .await;
    let output = run(&broker, &["req", "svc.echo", "ping"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ping\n");
    assert!(finish(echo).await.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_print_one_line_and_exit_non_zero() {
    let broker = TestBroker::with(|config| config.queue_max_messages = 1).await;
    let expect_failure = |args: &[&str], needle: &str| {
        let output = run(&broker, args);
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    expect_failure(&["req", "svc.nobody", "hi"], "no responders");
    expect_failure(&["pub", "-s", "127.0.0.1:1", "x", "y"], "cannot connect");
    expect_failure(&["pub", "bad.*", "y"], "wildcard");
    // A refused publish: the queue holds one message.
    broker.broker.bind_queue("tiny", "tiny").expect("queue");
    let ok = run(&broker, &["pub", "tiny", "one", "--confirm"]);
    assert!(ok.status.success());
    expect_failure(&["pub", "tiny", "two", "--confirm"], "QUEUE_FULL");
    // A request with a silent responder times out.
    let client = broker.client().await;
    let _silent = client.subscribe("svc.silent").await.expect("subscribe");
    expect_failure(&["req", "svc.silent", "hi", "--timeout", "0.2"], "no reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_when_the_broker_answers_and_one_when_it_does_not() {
    let broker = TestBroker::start().await;
    let port = broker.http.port().to_string();
    let healthy = run(&broker, &["health", "--http-port", &port]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(String::from_utf8_lossy(&healthy.stdout).contains("\"status\":\"ok\""));
    let ready = run(
        &broker,
        &["health", "--http-port", &port, "--path", "/ready"],
    );
    assert!(ready.status.success());

    let missing = run(
        &broker,
        &["health", "--http-port", &port, "--path", "/nope"],
    );
    assert_eq!(missing.status.code(), Some(1), "404 is unhealthy");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    broker.shutdown().await;
    let down = run(
        &TestBroker::start().await,
        &["health", "--http-port", &port],
    );
    assert_eq!(
        down.status.code(),
        Some(1),
        "nobody listens on the old port"
    );
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect"));
}

/// `tern bench --embedded --json` for every workload: the report says every
/// message arrived once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_complete_delivery_for_every_workload() {
    let broker = TestBroker::start().await;
    for args in [
        &[
            "bench",
            "pubsub",
            "--embedded",
            "--msgs",
            "3000",
            "--subs",
            "2",
            "--json",
        ][..],
        &[
            "bench",
            "queue",
            "--embedded",
            "--msgs",
            "2000",
            "--pubs",
            "2",
            "--consumers",
            "2",
            "--json",
        ],
        &[
            "bench",
            "req",
            "--embedded",
            "--msgs",
            "200",
            "--requesters",
            "2",
            "--json",
        ],
        &[
            "bench", "pubsub", "--target", "direct", "--msgs", "3000", "--json",
        ],
        &[
            "bench",
            "queue",
            "--embedded",
            "--msgs",
            "2000",
            "--filtered",
            "8",
            "--consumers",
            "2",
            "--json",
        ],
        &[
            "bench",
            "pubsub",
            "--embedded",
            "--msgs",
            "2000",
            "--filtered",
            "8",
            "--subs",
            "2",
            "--json",
        ],
    ] {
        let output = run(&broker, args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("JSON report");
        assert_eq!(
            report["delivered"], report["expected"],
            "{args:?}: {report}"
        );
        for fault in ["lost", "duplicated", "out_of_order"] {
            assert_eq!(report[fault], 0, "{args:?}: {fault} in {report}");
        }
        assert!(report["latency"]["count"].as_u64().expect("count") > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_with_a_filter_prints_only_the_messages_whose_headers_match() {
    let broker = TestBroker::start().await;
    let subscriber = tern(&broker)
        .args([
            "sub",
            "user.event.delivery",
            "--filter",
            "profile_id = 'u1' AND device_id = 'd1'",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sub");
    wait_until("sub subscribed", || broker.broker.subscription_count() == 1).await;
    for (device, text) in [("d2", "not mine"), ("d1", "mine")] {
        let output = run(
            &broker,
            &[
                "pub",
                "user.event.delivery",
                text,
                "--header",
                "profile_id=u1",
                "--header",
                &format!("device_id={device}"),
            ],
        );
        assert!(output.status.success(), "{output:?}");
    }
    let output = finish(subscriber).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "mine\n");
    let refused = run(&broker, &["sub", "x", "--filter", "device_id = d1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("at byte 12"),
        "{refused:?}"
    );
}
