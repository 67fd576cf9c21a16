//! The chat gateway flow against a running broker:
//!
//! ```sh
//! MAX_CONSUMERS=100 cargo run --release -- serve &
//! cargo run --release --example chat-gateway -- 127.0.0.1:9080
//! ```
//!
//! Exits 0 when every device got exactly its own events, in order, none twice,
//! none lost, and the slow device held up nobody. See `scenario.rs`.

mod scenario;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9080".to_owned());
    let setup = scenario::Scenario::default();
    println!(
        "{} users × {} devices over {} gateways, {} events per device, into `{}`",
        setup.users,
        setup.devices,
        setup.gateways,
        setup.events,
        scenario::QUEUE
    );
    match scenario::run(&address, setup).await {
        Ok(report) => {
            println!(
                "ok: {} devices got exactly their own {} events each, in order ({} in all)",
                report.devices_checked, setup.events, report.events_delivered
            );
            println!(
                "the others were done after {:?}; the slow device after {:?}",
                report.others_done_after, report.slow_done_after
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("chat-gateway: {failure}");
            ExitCode::FAILURE
        }
    }
}
