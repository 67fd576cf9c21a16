//! What this session's user may do (`AUTH_FILE`), checked where each request is
//! handled, and kept current: when the auth file is reloaded the session takes the
//! user's new permissions at once, ends the subscriptions they no longer allow
//! (ERROR `PERMISSION_DENIED` with the sid), and closes if the user was removed or
//! its credential changed (`AUTHENTICATION_FAILED`).
//!
//! Publish decisions are cached with the routes (`route_cache.rs`), so an allowed
//! subject costs nothing per message; a reload invalidates every route cache.

use std::sync::Arc;

use tern_proto::ErrorCode;
use tokio::sync::watch;
use tracing::info;

use super::subscriptions::Subscription;
use super::Session;
use crate::broker::{Broker, Refusal};
use crate::close_reason::CloseReason;
use crate::outbound::Outbox;
use crate::security::{AuthFailure, Authenticated, DeniedAction, Permissions};

/// The authenticated user of a session.
#[derive(Debug)]
pub(super) struct Access {
    /// Who, with which credential, and the permissions in force.
    pub(super) authenticated: Authenticated,
}

impl Access {
    pub(super) fn permissions(&self) -> &Arc<Permissions> {
        &self.authenticated.user.permissions
    }

    fn user(&self) -> &str {
        &self.authenticated.user.name
    }
}

/// A `PERMISSION_DENIED` refusal, counted.
fn refusal(
    broker: &Broker,
    access: Option<&Access>,
    action: DeniedAction,
    what: String,
) -> Refusal {
    broker.security().stats().count_denied(action);
    let user = access.map_or("", |access| access.user());
    Refusal::new(
        ErrorCode::PermissionDenied,
        format!("permission denied: user {user:?} may not {what}"),
    )
}

/// A publish to `subject` that the user's rules refused (the route cache found no
/// allow for it): allowed once if a request delivered here asked for an answer
/// there and the user has `allow_responses`.
pub(super) fn publish_denied(
    broker: &Broker,
    outbox: &Outbox,
    access: Option<&Access>,
    subject: &str,
) -> Result<(), Refusal> {
    if outbox.connection().take_response_permit(subject) {
        return Ok(());
    }
    Err(refusal(
        broker,
        access,
        DeniedAction::Publish,
        format!("publish to {subject:?}"),
    ))
}

/// Waits until the auth file changes (never, without one).
pub(super) async fn access_changed(changes: &mut Option<watch::Receiver<u64>>) {
    match changes {
        Some(changes) => {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Session {
    /// The user's permissions, or `None` when the broker has no `AUTH_FILE`.
    pub(super) fn permissions(&self) -> Option<&Arc<Permissions>> {
        self.access.as_ref().map(|access| access.permissions())
    }

    fn denied(&self, action: DeniedAction, what: String) -> Refusal {
        refusal(&self.broker, self.access.as_deref(), action, what)
    }

    /// May this user subscribe with `pattern` (a broadcast subscription, or the
    /// binding of a queue it creates)?
    pub(super) fn check_subscribe(&self, pattern: &str) -> Result<(), Refusal> {
        match self.permissions() {
            Some(permissions) if !permissions.subscribe.permits_pattern(pattern) => {
                Err(self.denied(DeniedAction::Subscribe, format!("subscribe to {pattern:?}")))
            }
            _ => Ok(()),
        }
    }

    /// May this user consume from queue `name`?
    pub(super) fn check_consume(&self, name: &str) -> Result<(), Refusal> {
        match self.permissions() {
            Some(permissions) if !permissions.consume.permits_subject(name) => Err(self.denied(
                DeniedAction::Consume,
                format!("consume from queue {name:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// May this user purge or delete queue `name`?
    pub(super) fn check_administer(&self, name: &str, action: &str) -> Result<(), Refusal> {
        match self.permissions() {
            Some(permissions) if !permissions.declare.permits_subject(name) => {
                Err(self.denied(DeniedAction::Administer, format!("{action} queue {name:?}")))
            }
            _ => Ok(()),
        }
    }

    /// May this user see queue `name` in QUEUE_LIST (it may consume or administer it)?
    pub(super) fn may_see_queue(&self, name: &str) -> bool {
        self.permissions().is_none_or(|permissions| {
            permissions.consume.permits_subject(name) || permissions.declare.permits_subject(name)
        })
    }

    /// The auth file was reloaded: take the user's new permissions, end the
    /// subscriptions they no longer allow, or close if the user is gone.
    pub(super) fn on_access_changed(&mut self) -> Result<(), CloseReason> {
        let (Some(access), Some(auth)) = (&mut self.access, self.broker.security().auth()) else {
            return Ok(());
        };
        let table = auth.table();
        let current = table
            .user(&access.authenticated.user.name)
            .filter(|user| user.holds(&access.authenticated.credential))
            .cloned();
        let Some(user) = current else {
            let name = access.authenticated.user.name.clone();
            self.broker
                .security()
                .stats()
                .count_auth_failure(AuthFailure::Revoked);
            info!(connection = self.id, user = %name, "user removed or credential changed by a reload: closing");
            self.send_error(
                ErrorCode::AuthenticationFailed,
                0,
                format!("user {name:?} was removed from the auth file, or its credential changed"),
            );
            return Err(CloseReason::AccessRevoked);
        };
        if Arc::ptr_eq(&user, &access.authenticated.user) || *user == *access.authenticated.user {
            access.authenticated.user = user;
            return Ok(());
        }
        access.authenticated.user = user;
        let permissions = access.permissions().clone();
        self.outbox
            .connection()
            .set_answers_requests(permissions.allow_responses);
        let revoked: Vec<(u32, String)> = self
            .subscriptions
            .iter()
            .filter_map(|(sid, subscription)| {
                let (allowed, what) = match subscription {
                    Subscription::Broadcast { pattern, .. } => (
                        permissions.subscribe.permits_pattern(pattern),
                        format!("subscribe to {pattern:?}"),
                    ),
                    Subscription::Queue { queue } => (
                        permissions.consume.permits_subject(queue.name()),
                        format!("consume from queue {:?}", &**queue.name()),
                    ),
                };
                (!allowed).then_some((*sid, what))
            })
            .collect();
        for (sid, what) in revoked {
            if let Some(subscription) = self.subscriptions.remove(&sid) {
                self.detach(sid, subscription);
            }
            let action = if what.starts_with("consume") {
                DeniedAction::Consume
            } else {
                DeniedAction::Subscribe
            };
            let refusal = self.denied(action, what);
            self.send_error(
                refusal.code,
                u64::from(sid),
                format!(
                    "{} (since the auth file was reloaded): subscription {sid} ended",
                    refusal.message
                ),
            );
        }
        self.outbox
            .connection()
            .set_subscriptions(self.subscriptions.len());
        Ok(())
    }
}
