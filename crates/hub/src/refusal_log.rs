//! Refused upgrades in the log, without letting a flood of them flood it: at most one line per
//! reason per [`WINDOW`], saying how many refusals of that reason it stands for. The metric
//! (`mt_stream_connections_rejected_total{reason}`) still counts every one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::lock;
use crate::metrics::RejectReason;

/// Shortest time between two log lines of one reason.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One slot per reason.
pub struct RefusalLog {
    slots: [Mutex<Slot>; RejectReason::ALL.len()],
}

#[derive(Default)]
struct Slot {
    last_line: Option<Instant>,
    /// Refusals since the last line that got none of their own.
    unlogged: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| Mutex::new(Slot::default())) }
    }
}

impl RefusalLog {
    /// Notes a refusal; logs it unless a line for its reason went out less than [`WINDOW`] ago.
    pub fn refused(&self, reason: RejectReason, detail: &str) {
        let index = RejectReason::ALL.iter().position(|r| *r == reason).expect("every reason is in ALL");
        let now = Instant::now();
        let since_last_line = {
            let mut slot = lock(&self.slots[index]);
            if slot.last_line.is_some_and(|at| now.duration_since(at) < WINDOW) {
                slot.unlogged += 1;
                return;
            }
            slot.last_line = Some(now);
            std::mem::take(&mut slot.unlogged) + 1
        };
        tracing::warn!(
            reason = reason.as_str(),
            detail,
            refusals = since_last_line,
            "upgrade refused ({since_last_line} of this reason since the last such line; at most one line per {} s)",
            WINDOW.as_secs()
        );
    }
}
