//! The results: a summary table for people, JSON for machines, and a latency CDF as SVG.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat::ProcSample;

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// The hub's resources over a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HubResources {
    pub rss_start_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
    pub cpu_seconds: f64,
    /// Hub CPU per delivery, microseconds.
    pub cpu_us_per_delivery: f64,
}

impl HubResources {
    pub fn new(start: ProcSample, peak_rss: u64, end: ProcSample, deliveries: u64) -> Self {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let cpu = end.cpu_seconds - start.cpu_seconds;
        Self {
            rss_start_mib: mib(start.rss_bytes),
            rss_peak_mib: mib(peak_rss.max(start.rss_bytes).max(end.rss_bytes)),
            rss_end_mib: mib(end.rss_bytes),
            cpu_seconds: cpu,
            cpu_us_per_delivery: if deliveries > 0 { cpu * 1e6 / deliveries as f64 } else { 0.0 },
        }
    }
}

/// One scenario's results.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub clients: usize,
    pub channels: usize,
    pub rate_per_second: f64,
    pub event_bytes: usize,
    pub seconds: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub failed_connections: u64,
    pub latency: Latency,
    pub hub: Option<HubResources>,
    /// Scenario-specific figures (name, value).
    pub extra: Vec<(String, f64)>,
}

impl Summary {
    /// Why the run means nothing, when every publish failed (the run then exits non-zero):
    /// with `first_error`, the first failure's reason.
    pub fn publish_failure(&self, first_error: Option<&str>) -> Option<String> {
        (self.published == 0 && self.publish_errors > 0).then(|| {
            format!(
                "every publish failed ({} of them), so no figure above means anything; the first: {}",
                self.publish_errors,
                first_error.unwrap_or("no reason recorded")
            )
        })
    }

    /// A two-column table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            ("clients / channels".into(), format!("{} / {}", self.clients, self.channels)),
            ("rate, size".into(), format!("{:.0} events/s, {} B", self.rate_per_second, self.event_bytes)),
            ("duration".into(), format!("{:.1} s", self.seconds)),
            ("published (errors)".into(), format!("{} ({})", self.published, self.publish_errors)),
            ("deliveries".into(), format!("{} ({:.0}/s)", self.deliveries, self.deliveries_per_second)),
            (
                "lost / duplicated / reordered".into(),
                format!("{} / {} / {}", self.lost, self.duplicated, self.reordered),
            ),
            ("failed connections".into(), self.failed_connections.to_string()),
            (
                "latency p50 / p90 / p99 / p99.9 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms",
                    self.latency.p50_ms,
                    self.latency.p90_ms,
                    self.latency.p99_ms,
                    self.latency.p999_ms,
                    self.latency.max_ms
                ),
            ),
        ];
        if let Some(hub) = &self.hub {
            rows.push((
                "hub RSS start / peak / end".into(),
                format!("{:.1} / {:.1} / {:.1} MiB", hub.rss_start_mib, hub.rss_peak_mib, hub.rss_end_mib),
            ));
            rows.push((
                "hub CPU".into(),
                format!("{:.2} s, {:.2} µs per delivery", hub.cpu_seconds, hub.cpu_us_per_delivery),
            ));
        }
        for (name, value) in &self.extra {
            rows.push((name.clone(), format!("{value:.3}")));
        }
        let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// A latency CDF as a standalone SVG: x is latency (log scale), y the share of events on a
/// "nines" scale (0%, 90%, 99%, 99.9%, 99.99%), so the tail is as readable as the median.
pub fn latency_svg(h: &Histogram<u64>, title: &str) -> String {
    let (w, hgt, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 20.0);
    let plot_w = w - left - right;
    let plot_h = hgt - top - bottom;
    let min_us = 10f64;
    let max_us = (h.max().max(100) as f64 * 1.2).max(1000.0);
    let x = |us: f64| left + (us.max(min_us).ln() - min_us.ln()) / (max_us.ln() - min_us.ln()) * plot_w;
    const NINES: f64 = 4.0;
    let y = |q: f64| {
        let nines = if q >= 1.0 { NINES } else { (-(1.0 - q).log10()).clamp(0.0, NINES) };
        top + (1.0 - nines / NINES) * plot_h
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        w / 2.0
    );
    // Axes and grid.
    let mut tick = 10f64;
    while tick <= max_us {
        let label = if tick >= 1000.0 { format!("{} ms", tick / 1000.0) } else { format!("{tick} µs") };
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{label}</text>"##,
            x(tick),
            top + plot_h,
            top + plot_h + 18.0
        );
        tick *= 10.0;
    }
    for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999] {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#ddd"/><text x="{2}" y="{3}" text-anchor="end">{4}%</text>"##,
            y(q),
            left + plot_w,
            left - 6.0,
            y(q) + 4.0,
            q * 100.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">publish-to-receive latency (log scale)</text>"#,
        left + plot_w / 2.0,
        hgt - 8.0
    );
    if !h.is_empty() {
        let mut points = String::new();
        let total = h.len() as f64;
        let mut seen = 0u64;
        for v in h.iter_recorded() {
            seen += v.count_at_value();
            let _ = write!(points, "{:.1},{:.1} ", x(v.value_iterated_to() as f64), y(seen as f64 / total));
        }
        let _ = write!(svg, r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{points}"/>"##);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::Summary;

    /// A run whose every publish failed is a failure that says why; a run with some publishes
    /// through, or none attempted, is not.
    #[test]
    fn every_publish_failed_is_a_failure() {
        let refused = Summary { publish_errors: 9, ..Summary::default() };
        let why = refused.publish_failure(Some("HTTP/1.1 403 Forbidden: set MT_PUBLISH_TOKEN")).unwrap();
        assert!(why.contains("every publish failed (9 of them)") && why.contains("403 Forbidden"), "{why}");
        assert_eq!(Summary { published: 10, publish_errors: 1, ..Summary::default() }.publish_failure(None), None);
        assert_eq!(Summary::default().publish_failure(None), None);
    }
}
