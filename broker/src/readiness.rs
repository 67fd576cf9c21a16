//! Readiness as a latch: `/ready` answers 200 once every start-up holder has
//! released its [`ReadinessHold`] (the listeners are bound and accepting; later, a
//! store has recovered), and never again from the moment shutdown begins. Liveness
//! (`/healthz`) is separate and stays up throughout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The broker's readiness.
#[derive(Debug, Default)]
pub struct Readiness {
    holds: AtomicUsize,
    /// Every hold was released once: ready from then on (until shutdown).
    latched: AtomicBool,
    shutting_down: AtomicBool,
}

/// Keeps the broker not ready while it exists (a start-up step in progress).
#[derive(Debug)]
#[must_use = "the broker turns ready when the hold is dropped"]
pub struct ReadinessHold(Arc<Readiness>);

impl Drop for ReadinessHold {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.latched.store(true, Ordering::Release);
        }
    }
}

impl Readiness {
    /// A latch held once: not ready until the returned hold is dropped.
    pub fn new() -> (Arc<Readiness>, ReadinessHold) {
        let readiness = Arc::new(Readiness::default());
        let hold = readiness.hold();
        (readiness, hold)
    }

    /// Another start-up step the broker must wait for. A hold taken after the latch
    /// has closed does not make a ready broker unready (it is a latch).
    pub fn hold(self: &Arc<Self>) -> ReadinessHold {
        self.holds.fetch_add(1, Ordering::AcqRel);
        ReadinessHold(self.clone())
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.latched.load(Ordering::Acquire) && !self.is_shutting_down()
    }

    /// Marks the start of shutdown: not ready from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_holder_released_and_never_again_after_shutdown() {
        let (readiness, startup) = Readiness::new();
        let recovery = readiness.hold();
        assert!(!readiness.is_ready());
        drop(startup);
        assert!(!readiness.is_ready(), "recovery still holds it");
        drop(recovery);
        assert!(readiness.is_ready());
        let late = readiness.hold();
        assert!(readiness.is_ready(), "a latch: a late hold changes nothing");
        drop(late);
        readiness.begin_shutdown();
        assert!(!readiness.is_ready());
        assert!(readiness.is_shutting_down());
    }
}
