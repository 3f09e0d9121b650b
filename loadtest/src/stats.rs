//! What the clients measured: deliveries, loss, duplicates and reordering per channel sequence,
//! and publish-to-receive latency in a histogram (microseconds).

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch (the publisher stamps events with it).
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// One client's (or, merged, all clients') counters.
#[derive(Clone)]
pub struct ClientStats {
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Last sequence seen per channel index (0 = none yet; sequences start at 1).
    pub last_seq: Vec<u64>,
    /// When the last event of each channel arrived (µs since the epoch; 0 = none yet).
    pub last_at_us: Vec<u64>,
    /// The longest wait between two events of one channel: with a steady publisher, how long
    /// delivery stopped (a Redis failover, say).
    pub longest_silence_us: u64,
    pub latency_us: Histogram<u64>,
}

impl ClientStats {
    pub fn new(channels: usize) -> Self {
        Self {
            deliveries: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            last_seq: vec![0; channels],
            last_at_us: vec![0; channels],
            longest_silence_us: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one event of `channel` with sequence `seq`, sent at `sent_us`.
    pub fn record(&mut self, channel: usize, seq: u64, sent_us: u64) {
        self.deliveries += 1;
        let now = now_micros();
        let _ = self.latency_us.record(now.saturating_sub(sent_us).max(1));
        if let Some(last_at) = self.last_at_us.get_mut(channel) {
            if *last_at > 0 {
                self.longest_silence_us = self.longest_silence_us.max(now.saturating_sub(*last_at));
            }
            *last_at = now;
        }
        let Some(last) = self.last_seq.get_mut(channel) else { return };
        if seq == *last + 1 {
            *last = seq;
        } else if seq > *last + 1 {
            // Skipped sequences are counted lost; should they arrive later they count as
            // reordered, so lost may over-count by exactly the reordered number.
            self.lost += seq - *last - 1;
            *last = seq;
        } else if seq == *last {
            self.duplicated += 1;
        } else {
            self.reordered += 1;
        }
    }

    /// Counts events published after the last one this client saw as lost.
    pub fn finish(&mut self, published_per_channel: &[u64], channel: usize) {
        if let (Some(last), Some(published)) = (self.last_seq.get(channel), published_per_channel.get(channel)) {
            self.lost += published.saturating_sub(*last);
        }
    }

    pub fn merge(&mut self, other: &ClientStats) {
        self.deliveries += other.deliveries;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.longest_silence_us = self.longest_silence_us.max(other.longest_silence_us);
        let _ = self.latency_us.add(&other.latency_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaps count as lost, repeats as duplicated, late ones as reordered; the tail counts too.
    #[test]
    fn sequence_accounting() {
        let mut stats = ClientStats::new(1);
        for seq in [1, 2, 4, 4, 3, 5] {
            stats.record(0, seq, now_micros());
        }
        assert_eq!((stats.deliveries, stats.lost, stats.duplicated, stats.reordered), (6, 1, 1, 1));
        stats.finish(&[8], 0);
        assert_eq!(stats.lost, 4);
    }
}
