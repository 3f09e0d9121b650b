//! The pod budget: the one source of truth every limit is derived from. A crate of its own, with
//! no dependencies, because the hub (`mt-hub`) and the deployer (`mt-deploy`) both need it.
//!
//! A [`Budget`] is (max connections, memory limit, heartbeat interval). Everything else the hub
//! bounds (the per-connection outbound queue, the global queued bytes, the kernel socket buffers
//! it asks for, the heartbeat timeout) is computed here, so `serve`, `deploy` and the chart's
//! values cannot drift apart. The split of the memory limit, for the default 1 GiB / 1000:
//!
//! | share | what | default |
//! |---|---|---|
//! | 1/4 | outbound queues, all connections together | 256 MiB, 268 KB a connection |
//! | per connection | kernel socket buffers we ask for (cgroup v2 charges them) | 2 × (32 KiB + 8 KiB), 80 MiB in all |
//! | rest | runtime, registry, per-connection state, allocator slack | ≥ 600 MiB |
//!
//! The queue share is divided evenly between connections, so the per-connection cap enforces
//! the global one: the sum of all queues can never pass [`Budget::queued_bytes_cap`].

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

/// Default connection cap per pod.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default memory limit when neither the cgroup nor configuration sets one: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize(1 << 30);
/// Default server ping interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Send buffer the hub asks the kernel for on each client socket (the kernel doubles it).
pub const SOCKET_SEND_BUFFER: ByteSize = ByteSize(32 << 10);
/// Receive buffer the hub asks for on each client socket: client frames are at most 9 KiB (an
/// `auth` message with its token), most under 200 bytes.
pub const SOCKET_RECV_BUFFER: ByteSize = ByteSize(8 << 10);

/// Smallest per-connection queue cap, however many connections share the budget: a few
/// large events must always fit.
const MIN_QUEUE_CAP: ByteSize = ByteSize(64 << 10);

/// A number of bytes. Parses `1073741824`, `512Mi`, `1Gi`, `64Ki`, `1G`, `500M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn mebibytes(self) -> u64 {
        self.0 >> 20
    }

    /// An approximate, readable form for messages (`13.7 GiB`); [`fmt::Display`] stays exact
    /// because it is also a Kubernetes quantity.
    pub fn human(self) -> String {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (suffix, unit) in UNITS {
            if self.0 >= unit {
                return format!("{:.1} {suffix}", self.0 as f64 / unit as f64);
            }
        }
        format!("{} B", self.0)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
        for (suffix, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{}", self.0 / unit, suffix);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Why a byte size did not parse.
#[derive(Debug, PartialEq, Eq)]
pub struct ByteSizeError(String);

impl fmt::Display for ByteSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected a byte size such as 1073741824, 512Mi or 1Gi, got {:?}", self.0)
    }
}

impl std::error::Error for ByteSizeError {}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, suffix) = text.split_at(digits_end);
        let multiplier: u64 = match suffix {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            _ => return Err(ByteSizeError(text.to_owned())),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .filter(|&n| n > 0)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError(text.to_owned()))
    }
}

/// What one pod may hold; every other limit derives from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Connections per pod; the next upgrade is refused with 503.
    pub max_connections: NonZeroUsize,
    /// The pod's memory limit (cgroup or configuration).
    pub memory_limit: ByteSize,
    /// Server ping interval (each connection jitters its own phase).
    pub heartbeat_interval: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_connections: NonZeroUsize::new(DEFAULT_MAX_CONNECTIONS)
                .expect("the default connection cap is not zero"),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }
}

impl Budget {
    /// Bytes all outbound queues may hold together: a quarter of the memory limit.
    pub fn queued_bytes_cap(&self) -> ByteSize {
        ByteSize(self.queue_cap_per_connection().0 * self.max_connections.get() as u64)
    }

    /// Bytes one connection's outbound queue may hold before the client is a slow consumer
    /// (closed with 4008): an even share of a quarter of the memory limit, at least 64 KiB.
    pub fn queue_cap_per_connection(&self) -> ByteSize {
        let share = self.memory_limit.0 / 4 / self.max_connections.get() as u64;
        ByteSize(share.max(MIN_QUEUE_CAP.0))
    }

    /// What the embedded broker's in-memory history may hold: an eighth of the memory limit
    /// (inside the half `validate` keeps free of queues and socket buffers).
    pub fn embedded_history_cap(&self) -> ByteSize {
        ByteSize(self.memory_limit.0 / 8)
    }

    /// Kernel socket buffer memory the connection cap may pin (the kernel doubles what we ask).
    pub fn socket_buffers_reserve(&self) -> ByteSize {
        let per_connection = 2 * (SOCKET_SEND_BUFFER.0 + SOCKET_RECV_BUFFER.0);
        ByteSize(per_connection * self.max_connections.get() as u64)
    }

    /// A peer that has sent nothing (not even a pong) for this long after a ping is closed
    /// with 4000: one full interval, so a ping is answered before the next one is due.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Checks the budget is coherent: the queues and socket buffers at full load must leave at
    /// least half of the memory limit for everything else.
    pub fn validate(&self) -> Result<(), BudgetError> {
        let committed = self.queued_bytes_cap().0 + self.socket_buffers_reserve().0;
        if committed > self.memory_limit.0 / 2 {
            return Err(BudgetError::TooManyConnections {
                max_connections: self.max_connections.get(),
                memory_limit: self.memory_limit,
                committed: ByteSize(committed),
            });
        }
        if self.heartbeat_interval < Duration::from_millis(10) {
            return Err(BudgetError::HeartbeatTooShort(self.heartbeat_interval));
        }
        Ok(())
    }
}

/// A budget that cannot hold.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    TooManyConnections { max_connections: usize, memory_limit: ByteSize, committed: ByteSize },
    HeartbeatTooShort(Duration),
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyConnections { max_connections, memory_limit, committed } => write!(
                f,
                "{max_connections} connections need {} of queues and socket buffers, more than half of the {} memory limit",
                committed.human(),
                memory_limit.human()
            ),
            Self::HeartbeatTooShort(interval) => write!(f, "heartbeat interval {interval:?} is shorter than 10ms"),
        }
    }
}

impl std::error::Error for BudgetError {}

/// Reads the cgroup v2 memory limit (`/sys/fs/cgroup/memory.max`); `None` when unlimited or absent.
pub fn cgroup_memory_limit() -> Option<ByteSize> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    parse_cgroup_memory_max(&text)
}

fn parse_cgroup_memory_max(text: &str) -> Option<ByteSize> {
    match text.trim() {
        "max" => None,
        value => value.parse::<u64>().ok().filter(|&n| n > 0).map(ByteSize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults give the documented per-connection and global queue caps.
    #[test]
    fn default_budget_derives_documented_limits() {
        let budget = Budget::default();
        assert_eq!(budget.queue_cap_per_connection(), ByteSize(268_435));
        assert_eq!(budget.queued_bytes_cap(), ByteSize(268_435_000));
        assert!(budget.queued_bytes_cap().0 <= budget.memory_limit.0 / 4);
        assert_eq!(budget.socket_buffers_reserve(), ByteSize(81_920_000));
        assert_eq!(budget.heartbeat_timeout(), Duration::from_secs(30));
        budget.validate().expect("the default budget is coherent");
    }

    /// Halving the memory halves the per-connection queue; doubling connections does too.
    #[test]
    fn queue_cap_follows_memory_and_connections() {
        let base = Budget::default();
        let half_memory = Budget { memory_limit: ByteSize(512 << 20), ..base };
        let double_conns = Budget { max_connections: NonZeroUsize::new(2000).unwrap(), ..base };
        assert_eq!(half_memory.queue_cap_per_connection().0, 134_217);
        assert_eq!(double_conns.queue_cap_per_connection().0, 134_217);
    }

    /// A budget that would spend the memory on queues and socket buffers is refused.
    #[test]
    fn overcommitted_budget_is_refused() {
        let budget = Budget { max_connections: NonZeroUsize::new(100_000).unwrap(), ..Budget::default() };
        assert!(matches!(budget.validate(), Err(BudgetError::TooManyConnections { .. })));
    }

    /// Byte sizes parse in the forms Kubernetes and people write.
    #[test]
    fn byte_sizes_parse_and_display() {
        assert_eq!("1Gi".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("512Mi".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1000".parse(), Ok(ByteSize(1000)));
        assert_eq!("2G".parse(), Ok(ByteSize(2_000_000_000)));
        assert!("1.5Gi".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1Gi");
        assert_eq!(ByteSize(768 << 20).to_string(), "768Mi");
        assert_eq!(ByteSize(14_745_600_000).human(), "13.7 GiB");
        assert_eq!(ByteSize(512).human(), "512 B");
    }

    /// The cgroup file's "max" means no limit; a number is the limit.
    #[test]
    fn cgroup_memory_max_parses() {
        assert_eq!(parse_cgroup_memory_max("max\n"), None);
        assert_eq!(parse_cgroup_memory_max("1073741824\n"), Some(ByteSize(1 << 30)));
        assert_eq!(parse_cgroup_memory_max("garbage"), None);
    }
}
