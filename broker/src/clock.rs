//! The broker's clock. Every timer and timestamp in the broker is tokio time, taken
//! through here, so a test that calls `tokio::time::pause()` controls all of them:
//! keepalive, handshake and write deadlines, the shutdown grace period, flow
//! control's stall limit, buffer release after idling, and latency stamps.
//! (`std::time::Instant` is not used in the broker for that reason.)

pub use tokio::time::Instant;

/// Now, on the broker's clock.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch: when a stored message was
/// published (0 if the clock is before 1970). The one wall-clock read in the broker.
pub fn wall_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A compact publish timestamp: microseconds on a wrapping 32-bit clock, 0 meaning
/// "not sampled". Differences are exact for latencies under 71 minutes.
pub type Stamp = u32;

/// The [`Stamp`] of now, measured from `epoch` (the broker's start); never 0.
pub fn stamp_since(epoch: Instant) -> Stamp {
    stamp_from_micros(epoch.elapsed().as_micros())
}

/// Turns a time since the epoch into a [`Stamp`] (never 0).
pub fn stamp_from_micros(micros: u128) -> Stamp {
    (micros as u32).max(1)
}

/// Seconds between `stamp` and `now` on the wrapping clock.
pub fn stamp_elapsed_seconds(stamp: Stamp, now: Stamp) -> f64 {
    f64::from(now.wrapping_sub(stamp)) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_wrap() {
        let before = stamp_from_micros(u128::from(u32::MAX) - 10);
        let after = stamp_from_micros(u128::from(u32::MAX) + 20);
        assert!((stamp_elapsed_seconds(before, after) - 0.000_030).abs() < 1e-9);
        assert_eq!(stamp_from_micros(0), 1, "0 is reserved for 'not sampled'");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_broker_clock() {
        let epoch = now();
        tokio::time::advance(std::time::Duration::from_millis(3)).await;
        assert_eq!(now() - epoch, std::time::Duration::from_millis(3));
        assert_eq!(stamp_since(epoch), 3_000);
    }
}
