//! Event ids: `<milliseconds>-<sequence>`, the form of a Redis stream id.
//!
//! On channels with history the id is the event's stream id, the same on every pod. Elsewhere
//! the hub makes one up in the same form ([`EventId::next_after`]), so clients see one format.
//! Ids order events within a channel; they compare as the pair (milliseconds, sequence).

use std::fmt;
use std::str::FromStr;

/// An event id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event id; expected <milliseconds>-<sequence> such as 1732460000000-0")]
pub struct BadEventId(pub String);

/// Longest id text: two u64 and the dash.
pub const MAX_ID_LEN: usize = 20 + 1 + 20;

impl EventId {
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The id after `last` at wall-clock `now_ms`, the way Redis makes stream ids: the clock's
    /// millisecond when it moved past `last`, else the next sequence in `last`'s millisecond.
    pub fn next_after(last: EventId, now_ms: u64) -> Self {
        if now_ms > last.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self { ms: last.ms, seq: last.seq.saturating_add(1) }
        }
    }

    /// Writes the id into `buffer` without allocating.
    pub fn write<'b>(&self, buffer: &'b mut [u8; MAX_ID_LEN]) -> &'b str {
        let mut at = buffer.len();
        for (i, mut n) in [self.seq, self.ms].into_iter().enumerate() {
            if i == 1 {
                at -= 1;
                buffer[at] = b'-';
            }
            loop {
                at -= 1;
                buffer[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
        std::str::from_utf8(&buffer[at..]).expect("digits and a dash are UTF-8")
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buffer = [0u8; MAX_ID_LEN];
        f.write_str(self.write(&mut buffer))
    }
}

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadEventId(text.chars().take(64).collect());
        let (ms, seq) = text.split_once('-').ok_or_else(bad)?;
        let number = |part: &str| -> Result<u64, BadEventId> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        Ok(Self { ms: number(ms)?, seq: number(seq)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids print and parse as `ms-seq`, and order as number pairs, not as text.
    #[test]
    fn format_parse_and_order() {
        let id: EventId = "1732460000000-12".parse().unwrap();
        assert_eq!(id, EventId::new(1_732_460_000_000, 12));
        assert_eq!(id.to_string(), "1732460000000-12");
        assert_eq!(EventId::new(u64::MAX, u64::MAX).to_string(), format!("{}-{}", u64::MAX, u64::MAX));
        assert_eq!(EventId::default().to_string(), "0-0");
        assert!(EventId::new(9, 0) < EventId::new(10, 0), "not a string comparison");
        assert!(EventId::new(5, 1) < EventId::new(5, 2));
        for bad in ["", "12", "-1", "1-", "a-1", "1-2-3", "+1-2", "99999999999999999999999-0", " 1-2"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    /// Made-up ids follow the clock and never go backwards.
    #[test]
    fn next_after_never_goes_back() {
        let last = EventId::new(1000, 4);
        assert_eq!(EventId::next_after(last, 999), EventId::new(1000, 5));
        assert_eq!(EventId::next_after(last, 1000), EventId::new(1000, 5));
        assert_eq!(EventId::next_after(last, 1001), EventId::new(1001, 0));
    }
}
