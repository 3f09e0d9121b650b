//! Connection admission: the per-pod connection cap and the draining flag. An [`Admission`] is
//! a held slot; the upgrade handler takes one before it upgrades, and dropping it (when the
//! connection ends) frees the slot.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Hub;
use crate::outbound::Close;

/// A held connection slot; dropping it frees the slot.
pub struct Admission {
    hub: Arc<Hub>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.connections.dec();
    }
}

impl Hub {
    /// Takes a connection slot, or `None` at the cap.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.budget.max_connections.get();
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        self.metrics.connections.inc();
        Some(Admission { hub: Arc::clone(self) })
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// True once shutdown began: readiness fails and upgrades are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Asks every connection to close with `close` (used by the drain).
    pub fn close_all_now(&self, close: Close) {
        for client in self.clients() {
            client.outbound.close(close);
        }
    }
}
