//! How `GET /metrics` answers: the format the scraper asked for, and the process metrics read
//! at scrape time.
//!
//! - **Format by `Accept`.** A scraper that accepts `application/openmetrics-text` (Prometheus
//!   does, first) gets OpenMetrics 1.0, as the registry encodes it. Anything else (no `Accept`,
//!   `text/plain;version=0.0.4`, `*/*`) gets the classic text format 0.0.4, which classic
//!   parsers read correctly: there a counter's `# HELP`/`# TYPE` lines name it with its `_total`
//!   suffix, as its samples do, and there is no `# EOF` (read as OpenMetrics, a classic parser
//!   saw each counter twice).
//! - **Process metrics**, unprefixed as every Prometheus client names them:
//!   `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_cpu_seconds_total`,
//!   `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, read from `/proc/self`
//!   just before each encoding (absent where `/proc` is not, e.g. macOS).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `Content-Type` of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of a classic text answer.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let kind = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The registry's OpenMetrics text rewritten as the classic text format 0.0.4.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The process metrics, registered once and refreshed by [`ProcessMetrics::refresh`].
#[derive(Clone, Default)]
pub struct ProcessMetrics {
    resident: Gauge,
    virtual_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    /// Registers them, unprefixed, in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("process");
        r.register("resident_memory_bytes", "Resident memory size in bytes", metrics.resident.clone());
        r.register("virtual_memory_bytes", "Virtual memory size in bytes", metrics.virtual_memory.clone());
        r.register("cpu_seconds", "User and system CPU time spent in seconds", metrics.cpu_seconds.clone());
        r.register("open_fds", "Open file descriptors", metrics.open_fds.clone());
        r.register("max_fds", "Limit on open file descriptors", metrics.max_fds.clone());
        r.register(
            "start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            metrics.start_time.clone(),
        );
        metrics
    }

    /// Reads `/proc/self`; leaves the values as they were where it cannot.
    pub fn refresh(&self) {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
        // Fields after the command (which may hold spaces) in parentheses; utime is field 14.
        let Some((_, after)) = stat.rsplit_once(") ") else { return };
        let fields: Vec<&str> = after.split(' ').collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        // Clock ticks per second: 100 on every Linux the hub runs on (USER_HZ).
        const TICKS: f64 = 100.0;
        const PAGE: u64 = 4096;
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let total = (utime + stime) as f64 / TICKS;
            let now = self.cpu_seconds.get();
            if total > now {
                self.cpu_seconds.inc_by(total - now);
            }
        }
        if let Some(vsize) = field(23) {
            self.virtual_memory.set(vsize as i64);
        }
        if let Some(rss_pages) = field(24) {
            self.resident.set((rss_pages * PAGE) as i64);
        }
        if let (Some(start_ticks), Some(boot)) = (field(22), boot_time()) {
            self.start_time.set(boot + start_ticks as f64 / TICKS);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Some(max) = max_open_files() {
            self.max_fds.set(max);
        }
    }
}

/// Seconds since the epoch at boot (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files (`/proc/self/limits`).
fn max_open_files() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("application/openmetrics-text; q=0")));
    }

    /// Counters are named with `_total` on their HELP and TYPE lines; no EOF or UNIT lines.
    #[test]
    fn classic_text_names_counters_as_their_samples() {
        let om = "# HELP mt_stream_deliveries Event frames.\n# TYPE mt_stream_deliveries counter\nmt_stream_deliveries_total 3\n# HELP mt_stream_connections Open.\n# TYPE mt_stream_connections gauge\nmt_stream_connections 2\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP mt_stream_deliveries_total Event frames.\n# TYPE mt_stream_deliveries_total counter\nmt_stream_deliveries_total 3\n# HELP mt_stream_connections Open.\n# TYPE mt_stream_connections gauge\nmt_stream_connections 2\n"
        );
    }

    #[test]
    fn process_metrics_read_proc() {
        let mut registry = Registry::default();
        let process = ProcessMetrics::register(&mut registry);
        process.refresh();
        assert!(process.resident.get() > 0);
        assert!(process.open_fds.get() > 0);
        assert!(process.max_fds.get() >= process.open_fds.get());
        assert!(process.start_time.get() > 1_600_000_000.0);
    }
}
