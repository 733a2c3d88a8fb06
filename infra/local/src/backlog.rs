//! The fan-out's backlog: committed events the dispatcher (see
//! [`crate::dispatch`]) has not finished. The store counts each event in as
//! it commits and paces appends by it; the dispatcher counts each out.

/// Committed events waiting for the fan-out above which new appends wait.
pub const MAX_BACKLOG: usize = 1024;

/// Committed events the dispatcher has not finished: the distance between
/// the log's head and what pages have been sent.
#[derive(Default)]
pub struct Backlog {
    events: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Backlog {
    /// One more event committed for the dispatcher.
    pub fn added(&self) {
        self.events.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    /// The dispatcher has fanned out one event.
    pub fn done(&self) {
        self.events.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.drained.notify_waiters();
    }
    pub fn events(&self) -> usize {
        self.events.load(std::sync::atomic::Ordering::Acquire)
    }
    /// Resolves once fewer than `max` events wait.
    pub async fn below(&self, max: usize) {
        loop {
            let notified = self.drained.notified();
            if self.events() < max {
                return;
            }
            notified.await;
        }
    }
}
