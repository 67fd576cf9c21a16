//! The protocol spec is complete enough to write a client from it alone: a Python
//! client written from `proto/PROTOCOL.md` (examples/python) passes its smoke test
//! against a real broker. CI provides `python3`.

mod common;

use std::process::Command;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_from_the_spec_in_python_works() {
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/smoke_test.py");
    let address = broker.address();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(address).output()
    })
    .await
    .expect("join")
    .expect("python3 must be installed (CI installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
