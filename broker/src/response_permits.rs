//! `allow_responses` (`AUTH_FILE`): a user may publish to the reply-to of each request delivered
//! to it, once, within [`RESPONSE_PERMIT_TTL`], whatever its `publish` rules say.
//! The permits live with the connection (filled where a DELIVER with a reply-to
//! is written into its outbox, taken by its PUBLISH handler) and are bounded:
//! past [`MAX_RESPONSE_PERMITS`] the oldest is forgotten.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::{self, Instant};

/// How long a responder may take to answer.
pub const RESPONSE_PERMIT_TTL: Duration = Duration::from_secs(120);
/// Most unanswered requests one connection may answer later.
pub const MAX_RESPONSE_PERMITS: usize = 4_096;

/// The reply subjects one connection may publish to once each.
#[derive(Debug, Default)]
pub struct ResponsePermits {
    permits: Mutex<VecDeque<(Box<str>, Instant)>>,
}

impl ResponsePermits {
    /// A request with reply-to `subject` was delivered to this connection.
    pub fn grant(&self, subject: &str) {
        let now = clock::now();
        let mut permits = self
            .permits
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        while permits
            .front()
            .is_some_and(|(_, granted)| now.duration_since(*granted) > RESPONSE_PERMIT_TTL)
        {
            permits.pop_front();
        }
        if permits.len() >= MAX_RESPONSE_PERMITS {
            permits.pop_front();
        }
        permits.push_back((subject.into(), now));
    }

    /// Takes the permit to publish to `subject`, if there is a live one.
    pub fn take(&self, subject: &str) -> bool {
        let now = clock::now();
        let mut permits = self
            .permits
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let found = permits.iter().position(|(permitted, granted)| {
            &**permitted == subject && now.duration_since(*granted) <= RESPONSE_PERMIT_TTL
        });
        match found {
            Some(index) => {
                permits.remove(index);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_permit_is_used_once_and_expires() {
        let permits = ResponsePermits::default();
        permits.grant("_INBOX.a.1");
        permits.grant("_INBOX.a.2");
        assert!(permits.take("_INBOX.a.1"));
        assert!(!permits.take("_INBOX.a.1"));
        assert!(!permits.take("_INBOX.a.3"));
        tokio::time::advance(RESPONSE_PERMIT_TTL + Duration::from_secs(1)).await;
        assert!(!permits.take("_INBOX.a.2"));
    }

    #[tokio::test(start_paused = true)]
    async fn permits_are_bounded() {
        let permits = ResponsePermits::default();
        for n in 0..MAX_RESPONSE_PERMITS + 10 {
            permits.grant(&format!("r.{n}"));
        }
        assert!(!permits.take("r.0"));
        assert!(permits.take(&format!("r.{}", MAX_RESPONSE_PERMITS + 9)));
    }
}
