//! `tern_auth_*` and `tern_tls_*` metrics: authentication failures by reason,
//! permission refusals by action, TLS handshake failures, and reloads by outcome.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Why a connection failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// HELLO carried no token and no certificate named a user.
    Missing,
    /// The token (or certificate) names no user.
    Wrong,
    /// Refused without looking: this peer address already has too many failed
    /// attempts waiting out their delay.
    Throttled,
    /// The user was removed, or its credential changed, by a reload.
    Revoked,
}

impl AuthFailure {
    const ALL: [AuthFailure; 4] = [
        AuthFailure::Missing,
        AuthFailure::Wrong,
        AuthFailure::Throttled,
        AuthFailure::Revoked,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Wrong => "wrong",
            AuthFailure::Throttled => "throttled",
            AuthFailure::Revoked => "revoked",
        }
    }
}

/// What a refused permission was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedAction {
    /// PUBLISH.
    Publish,
    /// A broadcast SUBSCRIBE (or a queue binding pattern).
    Subscribe,
    /// A queue SUBSCRIBE.
    Consume,
    /// QUEUE_PURGE or QUEUE_DELETE.
    Administer,
}

impl DeniedAction {
    const ALL: [DeniedAction; 4] = [
        DeniedAction::Publish,
        DeniedAction::Subscribe,
        DeniedAction::Consume,
        DeniedAction::Administer,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeniedAction::Publish => "publish",
            DeniedAction::Subscribe => "subscribe",
            DeniedAction::Consume => "consume",
            DeniedAction::Administer => "administer",
        }
    }
}

/// The security counters, in their own registry.
#[derive(Debug)]
pub struct SecurityStats {
    registry: Registry,
    auth_failures: Vec<Counter>,
    denied: Vec<Counter>,
    /// TLS handshakes that failed (bad certificate, wrong CA, plaintext, timeout).
    pub tls_handshake_failures: Counter,
    /// Reloads of certificates or the auth file that were applied.
    pub reloads_applied: Counter,
    /// Reloads that failed (the old configuration stays).
    pub reloads_failed: Counter,
}

impl Default for SecurityStats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tern");
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "auth_failures",
            "Connections refused AUTHENTICATION_FAILED, by reason: missing (no credential), \
             wrong (names no user), throttled (too many failures from the address waiting), \
             revoked (user removed or credential changed by a reload)",
            failures.clone(),
        );
        let auth_failures = AuthFailure::ALL
            .iter()
            .map(|reason| failures.get_or_create_owned(&vec![("reason", reason.as_str())]))
            .collect();
        let denied_family = Family::<Labels, Counter>::default();
        registry.register(
            "permission_denied",
            "Requests refused PERMISSION_DENIED by the user's permissions, by action",
            denied_family.clone(),
        );
        let denied = DeniedAction::ALL
            .iter()
            .map(|action| denied_family.get_or_create_owned(&vec![("action", action.as_str())]))
            .collect();
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (plaintext client, bad or untrusted certificate, timeout)",
            tls_handshake_failures.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "security_reloads",
            "Reloads of TLS certificates, the auth file and the HTTP token, by result",
            reloads.clone(),
        );
        let reloads_applied = reloads.get_or_create_owned(&vec![("result", "applied")]);
        let reloads_failed = reloads.get_or_create_owned(&vec![("result", "failed")]);
        SecurityStats {
            registry,
            auth_failures,
            denied,
            tls_handshake_failures,
            reloads_applied,
            reloads_failed,
        }
    }
}

impl SecurityStats {
    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one failed authentication.
    pub fn count_auth_failure(&self, reason: AuthFailure) {
        if let Some(counter) = self.auth_failures.get(reason as usize) {
            counter.inc();
        }
    }

    /// Counts one permission refusal.
    pub fn count_denied(&self, action: DeniedAction) {
        if let Some(counter) = self.denied.get(action as usize) {
            counter.inc();
        }
    }

    /// Authentication failures so far, for one reason (tests, `/healthz`).
    pub fn auth_failures(&self, reason: AuthFailure) -> u64 {
        self.auth_failures
            .get(reason as usize)
            .map_or(0, Counter::get)
    }

    /// Permission refusals so far, for one action.
    pub fn denied(&self, action: DeniedAction) -> u64 {
        self.denied.get(action as usize).map_or(0, Counter::get)
    }
}
