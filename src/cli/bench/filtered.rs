//! `tern bench --filtered N`: N subscriptions (broadcast, or consumers of the one
//! queue), each filtered to its own `device_id = 'd<i>'`, spread over the receiver
//! connections; every publish carries the `device_id` of a pseudo-random device, so
//! each message matches exactly one subscription and N - 1 filters do not match.
//! Compare N = 10 with N = 10,000 (the cost of filters that do not match) and with
//! an unfiltered run (the cost of filtering at all).

use std::pin::Pin;

use anyhow::anyhow;
use futures_util::stream::{SelectAll, StreamExt};

use super::target::{tern_client, Payload, Receiver, Target};

/// The header the filters and publishes use.
pub const DEVICE_HEADER: &str = "device_id";

/// One subscription's payloads.
pub type PayloadStream = Pin<Box<dyn futures_util::Stream<Item = Payload> + Send>>;

/// `d0`, `d1`, ... for `count` devices.
pub fn device_names(count: usize) -> Vec<String> {
    (0..count).map(|device| format!("d{device}")).collect()
}

/// The device publisher `publisher`'s `sequence`-th message is for: spread evenly
/// and deterministically (a SplitMix64 step), so runs are comparable.
pub fn device_for(publisher: u32, sequence: u64, devices: usize) -> usize {
    let mut x = sequence ^ (u64::from(publisher) << 40);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % devices as u64) as usize
}

/// `connections` receivers holding `filters` filtered subscriptions between them.
/// `queue`: join that queue (with this prefetch) instead of broadcast. Each
/// connection's subscriptions are read together by its one receiver task (a
/// `SelectAll`, which polls only the subscriptions that have something), as a
/// gateway holding many devices on one connection would read them.
pub async fn receivers(
    target: &Target,
    subject: &str,
    queue: Option<(&str, u32)>,
    connections: usize,
    filters: usize,
) -> anyhow::Result<Vec<Receiver>> {
    let Target::Tern(address) = target else {
        anyhow::bail!("--filtered measures Tern only");
    };
    let connections = connections.clamp(1, filters.max(1));
    let mut receivers = Vec::with_capacity(connections);
    for connection in 0..connections {
        let client = tern_client(address, "tern-bench-filtered").await?;
        let mut streams: SelectAll<PayloadStream> = SelectAll::new();
        for device in (connection..filters).step_by(connections) {
            let filter = format!("{DEVICE_HEADER} = 'd{device}'");
            match queue {
                None => {
                    let subscription = client
                        .subscribe_filtered(subject, &filter)
                        .await
                        .map_err(|error| anyhow!("subscribe: {error}"))?;
                    streams.push(Box::pin(subscription.map(Payload::Tern)));
                }
                Some((name, prefetch)) => {
                    let subscription = client
                        .queue_subscribe_filtered(name, subject, prefetch, &filter)
                        .await
                        .map_err(|error| anyhow!("queue subscribe: {error}"))?;
                    streams.push(Box::pin(subscription.then(|delivery| async move {
                        // An ack only fails once the connection is gone, which the
                        // receiver sees as the end of its streams.
                        let _ = delivery.ack().await;
                        Payload::Tern(delivery.into_message())
                    })));
                }
            }
        }
        receivers.push(Receiver::Merged(client, streams));
    }
    Ok(receivers)
}
