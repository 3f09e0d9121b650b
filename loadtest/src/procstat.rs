//! The hub's resident memory and CPU time, read from /proc (Linux).

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux x86-64).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads RSS (VmRSS) and user+system CPU time of `pid`; None if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: state is field 3; utime 14, stime 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample { rss_bytes: rss_kib * 1024, cpu_seconds: (utime + stime) / TICKS_PER_SECOND })
}

#[cfg(test)]
mod tests {
    /// Our own process can be read.
    #[test]
    fn reads_self() {
        let me = super::sample(std::process::id()).expect("/proc is readable");
        assert!(me.rss_bytes > 0);
    }
}
