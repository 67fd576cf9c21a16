//! Request/reply: replies come back through one inbox subscription per client
//! (`_INBOX.<random>.*`, created on the first request); each request waits for the
//! delivery on its own `_INBOX.<random>.<id>` subject, or fails at once with
//! NO_RESPONDERS.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tern_proto::subject::validate_subject;
use tern_proto::{DeliveryMode, Subscribe};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::inner::{Inner, Pending, Sink};
use super::publish::PublishParts;
use super::Client;
use crate::error::ClientError;
use crate::message::Message;

impl Client {
    pub(super) async fn request_parts(
        &self,
        parts: PublishParts<'_>,
        wait: Duration,
    ) -> Result<Message, ClientError> {
        validate_subject(parts.subject)?;
        self.ensure_inbox().await?;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let reply_to = format!("{}.{id}", self.inner.inbox_prefix);
        let parts = PublishParts {
            reply_to: Some(&reply_to),
            ..parts
        };
        let (sender, receiver) = oneshot::channel();
        self.inner.lock_state().requests.insert(id, sender);
        let pending = Pending::Request {
            id,
            subject: parts.subject.to_owned(),
        };
        if let Err(error) = self.inner.write_publish(parts, Some(pending)).await {
            self.inner.lock_state().requests.remove(&id);
            return Err(error);
        }
        match timeout(wait, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                self.inner.lock_state().requests.remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    pub(super) async fn ensure_inbox(&self) -> Result<(), ClientError> {
        let mut ready = self.inner.inbox_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let spec = Subscribe {
            sid: self.inner.next_sid(),
            mode: Some(DeliveryMode::Broadcast),
            prefetch: 0,
            pattern: format!("{}.*", self.inner.inbox_prefix).into(),
            queue: None,
        };
        self.inner.inbox_sid.store(spec.sid, Ordering::Release);
        self.inner.add_subscription(spec, None, Sink::Inbox).await?;
        *ready = true;
        Ok(())
    }
}

impl Inner {
    /// Hands a reply that arrived on the inbox to the request waiting for it (its id
    /// is the last token of the subject); a late reply finds nobody and is dropped.
    pub(super) fn complete_request(&self, message: Message) {
        let id = message
            .subject()
            .rsplit('.')
            .next()
            .and_then(|token| token.parse::<u64>().ok());
        if let Some(sender) = id.and_then(|id| self.lock_state().requests.remove(&id)) {
            let _ = sender.send(Ok(message));
        }
    }
}
