//! Queue administration: list, purge and delete queues (QUEUE_LIST, QUEUE_PURGE,
//! QUEUE_DELETE). Each request carries an id the broker echoes in its QUEUE_INFO
//! and QUEUE_OK answers, or as the `context` of an ERROR.

use std::sync::atomic::Ordering;

use tern_proto::{ErrorCode, ErrorFrame, Frame, QueueInfo};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::inner::Inner;
use super::Client;
use crate::error::ClientError;

/// One queue as the broker reports it (`Client::queues`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// The queue's name.
    pub name: String,
    /// The subject pattern it is bound to.
    pub pattern: String,
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// Payload bytes held (ready and unacked).
    pub bytes: u64,
}

/// An administration request waiting for its answer.
#[derive(Debug)]
pub(super) struct AdminRequest {
    listed: Vec<QueueStatus>,
    answer: oneshot::Sender<Result<(Vec<QueueStatus>, u64), ClientError>>,
}

/// Request ids have the top bit set: an ERROR's `context` is then never mistaken
/// for one of this client's subscription ids or delivery ids.
const REQUEST_ID_BIT: u64 = 1 << 63;

impl Client {
    /// Every queue on the broker, sorted by name.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// for queue in client.queues().await? {
    ///     println!("{} ({}): {} ready, {} unacked", queue.name, queue.pattern, queue.ready, queue.unacked);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn queues(&self) -> Result<Vec<QueueStatus>, ClientError> {
        let (listed, _) = self
            .admin(|request_id| Frame::QueueList { request_id })
            .await?;
        Ok(listed)
    }

    /// Removes every ready message of queue `name` (deliveries a consumer holds
    /// unacked stay with it); returns how many were removed. `UNKNOWN_QUEUE` if it
    /// does not exist.
    pub async fn purge_queue(&self, name: &str) -> Result<u64, ClientError> {
        let queue = name.into();
        let (_, count) = self
            .admin(|request_id| Frame::QueuePurge { request_id, queue })
            .await?;
        Ok(count)
    }

    /// Deletes queue `name` with the messages it holds; returns how many went with
    /// it. Refused with `QUEUE_IN_USE` while consumers are attached, unless `force`
    /// (they are then told `QUEUE_DELETED` and their subscriptions end).
    pub async fn delete_queue(&self, name: &str, force: bool) -> Result<u64, ClientError> {
        let queue = name.into();
        let (_, count) = self
            .admin(|request_id| Frame::QueueDelete {
                request_id,
                queue,
                force,
            })
            .await?;
        Ok(count)
    }

    async fn admin(
        &self,
        frame: impl FnOnce(u64) -> Frame,
    ) -> Result<(Vec<QueueStatus>, u64), ClientError> {
        let request_id = REQUEST_ID_BIT | self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, receiver) = oneshot::channel();
        self.inner.write_request(&frame(request_id), |state| {
            let listed = Vec::new();
            state
                .admin
                .insert(request_id, AdminRequest { listed, answer });
        })?;
        match timeout(self.inner.options.operation_timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                self.inner.lock_state().admin.remove(&request_id);
                Err(ClientError::Timeout)
            }
        }
    }
}

impl Inner {
    /// A QUEUE_INFO: one more queue for the listing it answers.
    pub(super) fn on_queue_info(&self, info: QueueInfo) {
        if let Some(request) = self.lock_state().admin.get_mut(&info.request_id) {
            request.listed.push(QueueStatus {
                name: info.name.to_string(),
                pattern: info.pattern.to_string(),
                ready: info.ready,
                unacked: info.unacked,
                consumers: info.consumers,
                bytes: info.bytes,
            });
        }
    }

    /// A QUEUE_OK: the request is done.
    pub(super) fn on_queue_ok(&self, request_id: u64, count: u64) {
        if let Some(request) = self.lock_state().admin.remove(&request_id) {
            let _ = request.answer.send(Ok((request.listed, count)));
        }
    }

    /// An ERROR answering an administration request; returns whether it was one.
    pub(super) fn on_admin_error(&self, error: &ErrorFrame) -> bool {
        if error.context & REQUEST_ID_BIT == 0 {
            return false;
        }
        let Some(request) = self.lock_state().admin.remove(&error.context) else {
            return false;
        };
        let _ = request.answer.send(Err(ClientError::Refused {
            code: error.code,
            message: error.message.to_string(),
        }));
        true
    }
}

/// Whether `code` ends an active queue subscription (its queue was deleted).
pub(super) fn ends_subscription(code: Option<ErrorCode>) -> bool {
    code == Some(ErrorCode::QueueDeleted)
}
