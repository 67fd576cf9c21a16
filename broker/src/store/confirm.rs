//! A confirmed publish that waits for the store: its PUBLISH_OK (or PUBLISH_ERROR)
//! is sent once every queue it went to has it as durable as `STORE_FSYNC` promises,
//! without holding up the connection's other frames.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tern_proto::{ErrorCode, Frame, PublishError};

use crate::outbound::Outbox;

/// A connection's answers to confirmed publishes that still wait for the store.
#[derive(Debug, Default)]
pub struct OwedConfirms {
    count: AtomicU32,
    settled: tokio::sync::Notify,
}

impl OwedConfirms {
    /// Answers still owed.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until none is owed.
    pub async fn wait_settled(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn settle_one(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }
}

/// The answer owed to one confirmed publish. Every queue append (and the session
/// itself) holds it once; the last release sends the answer. Its control-frame
/// room was reserved when it was made, so the client's unread answers stay bounded.
#[derive(Debug)]
pub struct PendingConfirm {
    outbox: Arc<Outbox>,
    sequence: u64,
    holds: AtomicU32,
    reserved: bool,
    failure: Mutex<Option<(ErrorCode, String)>>,
    /// The connection's count of answers still owed (it keeps answers in order).
    owed: Arc<OwedConfirms>,
}

impl PendingConfirm {
    /// The answer to publish `sequence` on `outbox`, held once by the caller.
    /// `owed` counts the connection's outstanding ones.
    pub fn new(outbox: Arc<Outbox>, sequence: u64, owed: Arc<OwedConfirms>) -> Arc<Self> {
        let reserved = outbox.reserve_control();
        owed.count.fetch_add(1, Ordering::AcqRel);
        Arc::new(PendingConfirm {
            outbox,
            sequence,
            holds: AtomicU32::new(1),
            reserved,
            failure: Mutex::new(None),
            owed,
        })
    }

    /// One more party must release it before the answer goes.
    pub fn hold(&self) {
        self.holds.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether only the one who made it holds it (no store append waits).
    pub fn held_only_by_caller(&self) -> bool {
        self.holds.load(Ordering::Acquire) == 1
    }

    /// The answer will be PUBLISH_ERROR with this code (the first failure wins).
    pub fn fail(&self, code: ErrorCode, message: impl Into<String>) {
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if failure.is_none() {
            *failure = Some((code, message.into()));
        }
    }

    /// Releases one hold; the last sends the answer.
    pub fn release(&self) {
        if self.holds.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        let frame = match failure {
            None => Frame::PublishOk {
                sequence: self.sequence,
            },
            Some((code, message)) => Frame::PublishError(PublishError {
                sequence: self.sequence,
                code: code.as_u16(),
                message: message.into(),
            }),
        };
        self.outbox.push_reserved_control(frame, self.reserved);
        self.owed.settle_one();
    }
}
