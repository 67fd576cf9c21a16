//! The chat-gateway example (`examples/chat-gateway/`), run as a test against a
//! real broker on port 0.

mod common;
#[path = "../examples/chat-gateway/scenario.rs"]
mod scenario;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_gets_exactly_its_own_events_and_the_slow_one_holds_up_nobody() {
    let broker = TestBroker::with(|config| config.max_consumers = 1000).await;
    // A slow device that needs 3 s in all, far longer than the others together even
    // in a debug build on a busy machine.
    let setup = scenario::Scenario {
        slow_device_delay: std::time::Duration::from_millis(100),
        ..scenario::Scenario::default()
    };
    let report = scenario::run(&broker.address(), setup)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.devices_checked, setup.users * setup.devices);
    assert_eq!(
        report.events_delivered,
        setup.users * setup.devices * setup.events
    );
    assert!(
        report.others_done_after < report.slow_done_after,
        "the others finished ({:?}) while the slow device still lagged ({:?})",
        report.others_done_after,
        report.slow_done_after
    );
    let queue = broker.broker.queue(scenario::QUEUE).expect("the queue");
    let depth = queue.depth();
    assert_eq!((depth.ready, depth.unacked), (0, 0), "nothing left over");
}
