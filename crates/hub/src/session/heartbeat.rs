//! A connection's heartbeat: jittered server pings, and the timeout for a peer that answers
//! none of them (4000).

use std::time::Duration;

use tokio::time::Instant;

use crate::hub::Client;
use crate::outbound::{Close, Event};
use crate::wire;

/// The heartbeat state of one connection.
pub(super) struct Heartbeat {
    interval: Duration,
    pub next_ping: Instant,
    /// When the last unanswered ping went out.
    ping_sent: Option<Instant>,
    /// Per-connection pseudo-random state for the jitter.
    jitter_state: u64,
}

impl Heartbeat {
    pub fn new(interval: Duration, seed: u64) -> Self {
        let mut heartbeat = Self { interval, next_ping: Instant::now(), ping_sent: None, jitter_state: seed };
        // The first ping lands anywhere in [0.5, 1.5) intervals, so connections opened
        // together (a reconnect storm) never ping together.
        heartbeat.next_ping = Instant::now() + interval.mul_f64(0.5 + heartbeat.random_fraction());
        heartbeat
    }

    /// A number in [0, 1) (splitmix64).
    fn random_fraction(&mut self) -> f64 {
        self.jitter_state = self.jitter_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Called when `next_ping` is reached: closes a silent peer, else queues a ping.
    pub fn tick(&mut self, client: &Client) {
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            if Instant::from_std(client.last_seen()) < sent {
                client.outbound.close(Close::HeartbeatTimeout);
                return;
            }
        }
        client.outbound.push(&Event::control(wire::frame(wire::OPCODE_PING, b"")));
        self.ping_sent = Some(now);
        // ±10% per interval keeps phases from drifting back together.
        self.next_ping = now + self.interval.mul_f64(0.9 + 0.2 * self.random_fraction());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First pings of many connections spread over [0.5, 1.5) intervals.
    #[test]
    fn first_pings_are_spread() {
        let interval = Duration::from_secs(30);
        let start = Instant::now();
        let offsets: Vec<f64> =
            (1..=1000u64).map(|seed| (Heartbeat::new(interval, seed).next_ping - start).as_secs_f64()).collect();
        let min = offsets.iter().cloned().fold(f64::MAX, f64::min);
        let max = offsets.iter().cloned().fold(0.0, f64::max);
        assert!(min >= 15.0 && max < 45.5, "{min}..{max}");
        assert!(max - min > 25.0, "offsets spread over most of the window: {min}..{max}");
        let in_first_second = offsets.iter().filter(|o| **o < min + 1.0).count();
        assert!(in_first_second < 100, "{in_first_second} pings in the same second");
    }
}
