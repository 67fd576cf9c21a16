//! The chat gateway's flow, end to end, with the SDK: a last-mile publisher emits
//! every user's events for every device into one queue, `user.event.delivery`, with
//! `profile_id` and `device_id` headers; gateways (each its own broker connection)
//! hold the devices, each device a queue subscription filtered to
//! `profile_id = '<user>' AND device_id = '<device>'` that acks what it receives.
//! One device is deliberately slow; one connects only after everything was
//! published. Shared by `main.rs` (run it against any broker) and
//! `tests/chat_gateway.rs` (run in CI).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tern_client::{Client, ClientError, OutgoingMessage};

/// The queue every event goes to.
pub const QUEUE: &str = "user.event.delivery";

/// How big the run is.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Users; each has `devices` devices.
    pub users: usize,
    /// Devices per user.
    pub devices: usize,
    /// Gateways the devices are spread over (round-robin).
    pub gateways: usize,
    /// Events published per device.
    pub events: usize,
    /// How long the slow device (user 0, device 0) works on each event.
    pub slow_device_delay: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            users: 20,
            devices: 3,
            gateways: 3,
            events: 30,
            slow_device_delay: Duration::from_millis(40),
        }
    }
}

/// What the run measured.
#[derive(Debug)]
pub struct Report {
    /// Devices that got exactly their own events, in order.
    pub devices_checked: usize,
    /// Events delivered and acked in all.
    pub events_delivered: usize,
    /// When the last device other than the slow one finished.
    pub others_done_after: Duration,
    /// When the slow device finished.
    pub slow_done_after: Duration,
}

/// A device name, `u<user>/d<device>`.
fn device_id(user: usize, device: usize) -> (String, String) {
    (format!("u{user}"), format!("d{device}"))
}

/// Receives `events` events for one device, checks each is its own and in order,
/// acks it, and returns when it finished.
async fn run_device(
    gateway: Client,
    user: String,
    device: String,
    events: usize,
    delay: Duration,
    started: Instant,
) -> Result<Duration, String> {
    let filter = format!("profile_id = '{user}' AND device_id = '{device}'");
    let prefetch = if delay.is_zero() { 16 } else { 1 };
    let mut subscription = gateway
        .queue_subscribe_filtered(QUEUE, "", prefetch, &filter)
        .await
        .map_err(|error| format!("{user}/{device}: subscribe: {error}"))?;
    for expected in 0..events {
        let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .map_err(|_| format!("{user}/{device}: event {expected} never came"))?
            .ok_or_else(|| format!("{user}/{device}: subscription ended"))?;
        let message = delivery.message();
        let own = message.header("profile_id") == Some(user.as_str())
            && message.header("device_id") == Some(device.as_str());
        let payload = String::from_utf8_lossy(message.payload()).into_owned();
        if !own || payload != format!("{user}/{device}/{expected}") {
            return Err(format!(
                "{user}/{device}: expected event {expected}, got `{payload}` for {:?}/{:?}",
                message.header("profile_id"),
                message.header("device_id")
            ));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        delivery
            .ack()
            .await
            .map_err(|error| format!("{user}/{device}: ack: {error}"))?;
    }
    Ok(started.elapsed())
}

/// Runs the scenario against the broker at `address`.
pub async fn run(address: &str, scenario: Scenario) -> Result<Report, String> {
    let connect = |address: &str| {
        let address = address.to_owned();
        async move {
            Client::connect(address)
                .await
                .map_err(|error: ClientError| format!("connect: {error}"))
        }
    };
    let mut gateways = Vec::new();
    for _ in 0..scenario.gateways.max(1) {
        gateways.push(connect(address).await?);
    }
    let started = Instant::now();
    let late = device_id(scenario.users - 1, scenario.devices - 1);
    let slow = device_id(0, 0);
    let mut running = HashMap::new();
    let mut index = 0;
    for user in 0..scenario.users {
        for device in 0..scenario.devices {
            let (user, device) = device_id(user, device);
            if (user.clone(), device.clone()) == late {
                continue;
            }
            let delay = if (user.clone(), device.clone()) == slow {
                scenario.slow_device_delay
            } else {
                Duration::ZERO
            };
            let gateway = gateways[index % gateways.len()].clone();
            index += 1;
            let key = format!("{user}/{device}");
            running.insert(
                key,
                tokio::spawn(run_device(
                    gateway,
                    user,
                    device,
                    scenario.events,
                    delay,
                    started,
                )),
            );
        }
    }
    // Every device but the late one has subscribed: publish.
    gateways[0]
        .flush()
        .await
        .map_err(|error| format!("flush: {error}"))?;
    for gateway in &gateways {
        gateway
            .flush()
            .await
            .map_err(|error| format!("flush: {error}"))?;
    }
    let publisher = connect(address).await?;
    for n in 0..scenario.events {
        for user in 0..scenario.users {
            for device in 0..scenario.devices {
                let (user, device) = device_id(user, device);
                let event = OutgoingMessage::new(QUEUE, format!("{user}/{device}/{n}"))
                    .header("profile_id", user)
                    .header("device_id", device);
                publisher
                    .send_confirmed(event)
                    .await
                    .map_err(|error| format!("publish: {error}"))?;
            }
        }
    }
    // The late device connects now and gets what was published while it was away.
    let late_device = tokio::spawn(run_device(
        gateways[0].clone(),
        late.0.clone(),
        late.1.clone(),
        scenario.events,
        Duration::ZERO,
        started,
    ));
    let mut others_done_after = Duration::ZERO;
    let mut slow_done_after = Duration::ZERO;
    let mut devices_checked = 0;
    for (key, task) in running {
        let done = task.await.map_err(|error| format!("{key}: {error}"))??;
        if key == format!("{}/{}", slow.0, slow.1) {
            slow_done_after = done;
        } else {
            others_done_after = others_done_after.max(done);
        }
        devices_checked += 1;
    }
    let late_done = late_device
        .await
        .map_err(|error| format!("late device: {error}"))??;
    others_done_after = others_done_after.max(late_done);
    devices_checked += 1;
    // Acks are sent without waiting: a round trip on each gateway proves the broker
    // has settled them all.
    for gateway in &gateways {
        gateway
            .flush()
            .await
            .map_err(|error| format!("flush: {error}"))?;
    }
    Ok(Report {
        devices_checked,
        events_delivered: devices_checked * scenario.events,
        others_done_after,
        slow_done_after,
    })
}
