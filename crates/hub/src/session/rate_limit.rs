//! A per-connection limit on `subscribe`/`unsubscribe` messages: each changes the registry
//! (and, on a channel's first or last subscriber, the Redis subscription), so one connection
//! must not be able to drive them at the speed of its socket. A token bucket: a burst of
//! [`BURST`] messages, refilled at [`PER_SECOND`]; a message over the limit is refused with
//! `rate_limited` (and counts as a bad request, so a client that keeps flooding is closed with
//! 1008).

use std::time::Instant;

/// Sustained subscribe/unsubscribe/auth messages per second per connection.
pub const PER_SECOND: u32 = 50;
/// Messages a connection may send at once before the rate applies.
pub const BURST: u32 = 100;

/// One connection's bucket.
pub struct OpBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl OpBudget {
    pub fn new(now: Instant) -> Self {
        Self { tokens: BURST as f64, refilled_at: now }
    }

    /// Takes one message's token; `false` when the connection is over its rate.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * PER_SECOND as f64).min(BURST as f64);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A burst passes, the next is refused, and the rate refills it.
    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut budget = OpBudget::new(start);
        assert!((0..BURST).all(|_| budget.take(start)));
        assert!(!budget.take(start), "over the burst");
        let later = start + Duration::from_millis(1000 / PER_SECOND as u64 + 1);
        assert!(budget.take(later), "one token back after 1/PER_SECOND s");
        assert!(!budget.take(later));
        let much_later = start + Duration::from_secs(3600);
        assert_eq!(
            (0..2 * BURST).filter(|_| budget.take(much_later)).count(),
            BURST as usize,
            "never more than a burst"
        );
    }
}
