//! Keepalive: a connection silent for `PING_INTERVAL_SECS` gets a PING; one still
//! silent a whole interval later is closed as stale. Any bytes from the client count
//! as traffic. Runs on tokio time (see [`crate::clock`]), so tests pause it.

use std::time::Duration;

use crate::clock::{self, Instant};

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

/// One connection's keepalive state. The timer itself is the session's: a `Sleep`
/// pinned in the session's own future and reset to [`Keepalive::deadline`] after
/// each tick, so an idle connection holds no separate timer allocation.
#[derive(Debug)]
pub(super) struct Keepalive {
    interval: Duration,
    deadline: Instant,
    heard_from_client: bool,
    ping_outstanding: bool,
}

impl Keepalive {
    /// A keepalive ticking every `interval`, starting one interval from now.
    pub(super) fn new(interval: Duration) -> Self {
        Keepalive {
            interval,
            deadline: clock::now() + interval,
            heard_from_client: false,
            ping_outstanding: false,
        }
    }

    /// The interval (`PING_INTERVAL_SECS`).
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next tick is due.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Records traffic from the client.
    pub(super) fn heard_from_client(&mut self) {
        self.heard_from_client = true;
    }

    /// The timer fired: says what this tick calls for and schedules the next one an
    /// interval from now (a late tick delays the ones after it).
    pub(super) fn on_tick(&mut self) -> Tick {
        self.deadline = clock::now() + self.interval;
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

    async fn tick(keepalive: &mut Keepalive) -> Tick {
        tokio::time::sleep_until(keepalive.deadline()).await;
        keepalive.on_tick()
    }

    #[tokio::test(start_paused = true)]
    async fn silence_pings_then_closes_and_traffic_resets_it() {
        let start = clock::now();
        let mut keepalive = Keepalive::new(Duration::from_secs(30));
        assert_eq!(tick(&mut keepalive).await, Tick::Ping);
        assert_eq!(clock::now() - start, Duration::from_secs(30));
        keepalive.heard_from_client();
        assert_eq!(tick(&mut keepalive).await, Tick::Quiet);
        assert_eq!(tick(&mut keepalive).await, Tick::Ping);
        assert_eq!(tick(&mut keepalive).await, Tick::Stale);
        assert_eq!(clock::now() - start, Duration::from_secs(120));
    }
}
