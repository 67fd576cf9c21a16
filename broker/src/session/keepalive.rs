//! Keepalive: a connection silent for `PING_INTERVAL_SECS` gets a PING; one still
//! silent a whole interval later is closed as stale. Any bytes from the client count
//! as traffic. Runs on tokio time (see [`crate::clock`]), so tests pause it.

use std::time::Duration;

use tokio::time::{interval_at, Interval, MissedTickBehavior};

use crate::clock;

/// What to do at a keepalive tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tick {
    /// The client was heard from, or a PING is out: nothing to do.
    Quiet,
    /// Silent for an interval: send a PING.
    Ping,
    /// Silent for an interval after a PING: close the connection.
    Stale,
}

/// One connection's keepalive timer and state.
#[derive(Debug)]
pub(super) struct Keepalive {
    interval: Duration,
    timer: Interval,
    heard_from_client: bool,
    ping_outstanding: bool,
}

impl Keepalive {
    /// A keepalive ticking every `interval`, starting one interval from now.
    pub(super) fn new(interval: Duration) -> Self {
        let mut timer = interval_at(clock::now() + interval, interval);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Keepalive {
            interval,
            timer,
            heard_from_client: false,
            ping_outstanding: false,
        }
    }

    /// The interval (`PING_INTERVAL_SECS`).
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// Records traffic from the client.
    pub(super) fn heard_from_client(&mut self) {
        self.heard_from_client = true;
    }

    /// Waits for the next tick and says what it calls for. Cancel-safe.
    pub(super) async fn tick(&mut self) -> Tick {
        self.timer.tick().await;
        if self.heard_from_client {
            self.heard_from_client = false;
            self.ping_outstanding = false;
            Tick::Quiet
        } else if self.ping_outstanding {
            Tick::Stale
        } else {
            self.ping_outstanding = true;
            Tick::Ping
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_pings_then_closes_and_traffic_resets_it() {
        let mut keepalive = Keepalive::new(Duration::from_secs(30));
        assert_eq!(keepalive.tick().await, Tick::Ping);
        keepalive.heard_from_client();
        assert_eq!(keepalive.tick().await, Tick::Quiet);
        assert_eq!(keepalive.tick().await, Tick::Ping);
        assert_eq!(keepalive.tick().await, Tick::Stale);
    }
}
