//! Connection options.

use std::time::Duration;

use tern_proto::Role;

/// How the client behaves when the connection drops.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// Reconnect at all? Default: yes.
    pub enabled: bool,
    /// Give up after this many failed attempts in a row; `None` = never give up.
    pub max_attempts: Option<u32>,
    /// Delay before the first retry; doubles per failed attempt.
    pub initial_delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            max_attempts: None,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: a dropped connection closes the client.
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        }
    }

    /// The delay before attempt number `attempt` (0-based): exponential backoff with
    /// jitter in [delay/2, delay], so many clients do not reconnect in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        let delay = self
            .initial_delay
            .saturating_mul(factor)
            .min(self.max_delay);
        let half = delay / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Options for [`crate::Client::connect_with`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name sent in HELLO, shown in broker logs.
    pub name: String,
    /// What the connection may do. Default: [`Role::Both`].
    pub role: Role,
    /// Sent in HELLO: the token of a broker with `AUTH_FILE` (empty: none).
    pub auth_token: String,
    /// Speak TLS to the broker (`None`: plain TCP).
    pub tls: Option<crate::TlsOptions>,
    /// Time allowed for TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Time allowed for an acknowledgement from the broker (subscribe, confirmed
    /// publish, flush).
    pub operation_timeout: Duration,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Bytes of outgoing frames buffered before `publish` waits (backpressure).
    pub max_pending_bytes: usize,
    /// Messages handed to a broadcast subscription and not yet taken by it before
    /// the client stops reading the socket (and the broker first slows the
    /// publishers, then drops for it and reports the gap). The subscription takes
    /// what waits in one batch, so it holds at most twice this many.
    pub subscription_capacity: usize,
    /// Payload bytes handed to a broadcast subscription and not yet taken by it
    /// before the client stops reading the socket, whatever the message count (one
    /// message is always let through, however large). Like `subscription_capacity`,
    /// at most twice this is held per subscription. Queue subscriptions are bounded
    /// by their prefetch window instead.
    pub subscription_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: "tern-client".to_owned(),
            role: Role::Both,
            auth_token: String::new(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            max_pending_bytes: 8 * 1024 * 1024,
            subscription_capacity: 8192,
            subscription_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ClientOptions {
    /// Sets the client name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the role.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Authenticates with `token` (a broker with `AUTH_FILE`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = token.into();
        self
    }

    /// Connects with TLS.
    pub fn tls(mut self, tls: crate::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the operation timeout.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets the reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = ReconnectPolicy::default();
        for attempt in 0..20 {
            let delay = policy.delay(attempt);
            let ceiling = (policy.initial_delay * 2u32.pow(attempt.min(16))).min(policy.max_delay);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {attempt}: {delay:?}"
            );
        }
    }
}
