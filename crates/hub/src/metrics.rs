//! Every Prometheus metric of the hub, in one place, with bounded label sets (never a client id
//! or a channel name), prefix `mt_stream_`. `docs/metrics.md` lists them for users; a test holds
//! that list to this registry, and each label's closed set to its enum.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::AuthFailure;
pub use crate::close::CloseReason;
use crate::protocol::{RecoveryOutcome, ResumeFailure};

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// The connection cap is reached.
    Capacity,
    /// The `Origin` is not allowed.
    Origin,
    /// The hub is draining.
    Draining,
    /// Not a valid WebSocket upgrade, or bad query.
    BadRequest,
    /// Too many connections still in their HTTP phase; closed before reading anything.
    Overload,
}

impl RejectReason {
    /// Every label value.
    pub const ALL: [Self; 5] = [Self::Capacity, Self::Origin, Self::Draining, Self::BadRequest, Self::Overload];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Origin => "origin",
            Self::Draining => "draining",
            Self::BadRequest => "bad_request",
            Self::Overload => "overload",
        }
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: RejectReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: CloseReason,
}

/// How a resume ended: the `outcome` label (`recovered`, or a [`ResumeFailure`]'s label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ResumeOutcome(pub RecoveryOutcome);

impl ResumeOutcome {
    /// Every label value.
    pub fn all() -> impl Iterator<Item = Self> {
        std::iter::once(Self(Ok(()))).chain(ResumeFailure::ALL.into_iter().map(|failure| Self(Err(failure))))
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            Ok(()) => "recovered",
            Err(failure) => failure.label(),
        }
    }
}

impl EncodeLabelValue for ResumeOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeLabels {
    pub outcome: ResumeOutcome,
}

/// The build: `version` of the crate, `commit` it was built from (`unknown` outside a git
/// checkout, e.g. in the image, unless `MT_BUILD_COMMIT` was set for the build).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

/// The `commit` label of `mt_stream_build_info`.
pub const BUILD_COMMIT: &str = env!("MT_BUILD_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub reason: AuthFailure,
}

/// The hub's metrics; cloned handles share the same values.
#[derive(Clone)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_rejected: Family<RejectLabels, Counter>,
    pub admin_connections_evicted: Counter,
    pub connections_closed: Family<CloseLabels, Counter>,
    pub messages_received: Counter,
    pub messages_published: Counter,
    pub deliveries: Counter,
    pub flushes: Counter,
    pub slow_consumer_disconnects: Counter,
    pub sockets_full: Counter,
    pub conflations: Counter,
    pub resumes: Family<ResumeLabels, Counter>,
    pub history_replayed: Counter,
    pub history_errors: Counter,
    pub heartbeat_timeouts: Counter,
    pub client_errors: Counter,
    pub build_info: Family<BuildLabels, Gauge>,
    pub tokens_verified: Counter,
    pub auth_failures: Family<AuthLabels, Counter>,
    pub forbidden_subscribes: Counter,
    pub auth_public_keys: Gauge,
    pub auth_key_reload_failures: Counter,
    pub queued_bytes: Gauge,
    pub channels: Gauge,
    pub redis_connected: Gauge,
    pub source_up: Gauge,
    pub source_reconnects: Counter,
    pub source_resubscribes: Family<crate::source::redis::ResubscribeLabels, Counter>,
    pub source_lagged_messages: Counter,
    pub source_last_event_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub delivery_lag_seconds: Histogram,
    pub queue_depth_bytes: Histogram,
    pub batch_frames: Histogram,
    /// `mt_stream_github_*`.
    pub github: crate::github::metrics::GithubMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them under the `mt_stream` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            connections: Gauge::default(),
            connections_rejected: Family::default(),
            admin_connections_evicted: Counter::default(),
            connections_closed: Family::default(),
            messages_received: Counter::default(),
            messages_published: Counter::default(),
            deliveries: Counter::default(),
            flushes: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            sockets_full: Counter::default(),
            conflations: Counter::default(),
            resumes: Family::default(),
            history_replayed: Counter::default(),
            history_errors: Counter::default(),
            heartbeat_timeouts: Counter::default(),
            client_errors: Counter::default(),
            build_info: Family::default(),
            tokens_verified: Counter::default(),
            auth_failures: Family::default(),
            forbidden_subscribes: Counter::default(),
            auth_public_keys: Gauge::default(),
            auth_key_reload_failures: Counter::default(),
            queued_bytes: Gauge::default(),
            channels: Gauge::default(),
            redis_connected: Gauge::default(),
            source_up: Gauge::default(),
            source_reconnects: Counter::default(),
            source_resubscribes: Family::default(),
            source_lagged_messages: Counter::default(),
            source_last_event_age_seconds: Gauge::default(),
            // 50 µs .. ~1.6 s
            delivery_lag_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            )),
            // 64 B .. 4 MiB
            queue_depth_bytes: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(64.0, 4.0, 9)),
            // 1 .. 4096 frames
            batch_frames: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 13)),
            github: crate::github::metrics::GithubMetrics::register(registry.sub_registry_with_prefix("mt_stream")),
        };
        let r = registry.sub_registry_with_prefix("mt_stream");
        r.register("connections", "Open WebSocket connections", metrics.connections.clone());
        r.register("connections_rejected", "Upgrades refused, by reason", metrics.connections_rejected.clone());
        r.register(
            "admin_connections_evicted",
            "Idle admin-port connections closed to read a new one, all 64 slots being taken",
            metrics.admin_connections_evicted.clone(),
        );
        r.register("connections_closed", "Connections ended, by reason", metrics.connections_closed.clone());
        r.register("messages_received", "Events received from the source", metrics.messages_received.clone());
        r.register("messages_published", "Events published through this hub", metrics.messages_published.clone());
        r.register("deliveries", "Event frames written to client sockets", metrics.deliveries.clone());
        r.register("flushes", "Socket writes of batched frames", metrics.flushes.clone());
        r.register(
            "slow_consumer_disconnects",
            "Clients closed with 4008 because their queue exceeded the budget",
            metrics.slow_consumer_disconnects.clone(),
        );
        r.register(
            "sockets_full",
            "Writes that found a connection's socket full: its writer then waits for the socket to drain and writes what queued up meanwhile in one go",
            metrics.sockets_full.clone(),
        );
        r.register(
            "slow_consumer_conflations",
            "Pushes to a lagging client that conflated its queued events instead of closing it",
            metrics.conflations.clone(),
        );
        r.register("resumes", "Subscriptions resumed from an id, by outcome", metrics.resumes.clone());
        r.register(
            "history_replayed",
            "Events replayed from history to resuming clients",
            metrics.history_replayed.clone(),
        );
        r.register("history_errors", "History reads that failed (retried)", metrics.history_errors.clone());
        r.register(
            "heartbeat_timeouts",
            "Clients closed with 4000 because they answered no ping",
            metrics.heartbeat_timeouts.clone(),
        );
        r.register("client_errors", "Bad client frames answered with an error message", metrics.client_errors.clone());
        r.register("build_info", "1, labelled with the version and commit of this build", metrics.build_info.clone());
        r.register("tokens_verified", "Connection tokens that passed verification", metrics.tokens_verified.clone());
        r.register(
            "auth_failures",
            "Tokens refused (connection closed with 4001), by reason",
            metrics.auth_failures.clone(),
        );
        r.register(
            "forbidden_subscribes",
            "Channels a connection asked for without a grant (answered with a forbidden error)",
            metrics.forbidden_subscribes.clone(),
        );
        r.register("auth_public_keys", "Keys loaded from the public keys file", metrics.auth_public_keys.clone());
        r.register(
            "auth_key_reload_failures",
            "Reads of the public keys file that failed (the keys in use stay)",
            metrics.auth_key_reload_failures.clone(),
        );
        r.register("queued_bytes", "Bytes waiting in all outbound queues", metrics.queued_bytes.clone());
        r.register("channels", "Channels with at least one local subscriber", metrics.channels.clone());
        r.register(
            "source_up",
            "1 while the event source delivers (Redis: as redis_connected; the embedded broker: always), else 0",
            metrics.source_up.clone(),
        );
        r.register("redis_connected", "1 while the Redis subscription works, else 0", metrics.redis_connected.clone());
        r.register("source_reconnects", "Reconnections of the event source", metrics.source_reconnects.clone());
        r.register(
            "source_resubscribes",
            "Channel subscriptions re-made, by cause and by the Redis primary they are now on",
            metrics.source_resubscribes.clone(),
        );
        r.register(
            "source_lagged_messages",
            "Events the source dropped because the hub fell behind it",
            metrics.source_lagged_messages.clone(),
        );
        r.register(
            "source_last_event_age_seconds",
            "Seconds since the last event (canary included) came from the source",
            metrics.source_last_event_age_seconds.clone(),
        );
        r.register(
            "delivery_lag_seconds",
            "Source receive to socket write, oldest frame of each flush",
            metrics.delivery_lag_seconds.clone(),
        );
        r.register(
            "queue_depth_bytes",
            "Bytes a connection's queue held when a flush began writing it",
            metrics.queue_depth_bytes.clone(),
        );
        r.register("batch_frames", "Frames written per socket flush", metrics.batch_frames.clone());
        metrics
            .build_info
            .get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION"), commit: BUILD_COMMIT })
            .set(1);
        // Every value of every closed label set has its series from the start, at 0: a
        // dashboard shows 0, not "no data", and rate() over it is 0, not empty.
        for reason in CloseReason::ALL {
            let _ = metrics.connections_closed.get_or_create(&CloseLabels { reason });
        }
        for reason in RejectReason::ALL {
            let _ = metrics.connections_rejected.get_or_create(&RejectLabels { reason });
        }
        for outcome in ResumeOutcome::all() {
            let _ = metrics.resumes.get_or_create(&ResumeLabels { outcome });
        }
        for reason in AuthFailure::ALL {
            let _ = metrics.auth_failures.get_or_create(&AuthLabels { reason });
        }
        metrics
    }

    /// Counts what one flush of a connection's queue wrote (nothing if it wrote nothing);
    /// `now` is about when it wrote (a flusher reads the clock once per few flushes).
    pub fn record_flush(&self, stats: &crate::outbound::FlushStats, now: std::time::Instant) {
        if stats.writes == 0 {
            return;
        }
        if let Some(oldest) = stats.oldest_delivery {
            self.delivery_lag_seconds.observe(now.saturating_duration_since(oldest).as_secs_f64());
            self.deliveries.inc_by(stats.deliveries);
        }
        self.flushes.inc();
        self.batch_frames.observe(stats.frames as f64);
        self.queue_depth_bytes.observe(stats.queued_bytes as f64);
    }

    /// Counts a closed connection.
    pub fn closed(&self, reason: CloseReason) {
        self.connections_closed.get_or_create(&CloseLabels { reason }).inc();
    }

    /// Counts a resume by how it ended.
    pub fn resumed(&self, outcome: RecoveryOutcome) {
        self.resumes.get_or_create(&ResumeLabels { outcome: ResumeOutcome(outcome) }).inc();
    }

    /// Counts a refused token.
    pub fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures.get_or_create(&AuthLabels { reason }).inc();
    }

    /// Counts a refused upgrade.
    pub fn rejected(&self, reason: RejectReason) {
        self.connections_rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/metrics.md`, the metric list users read.
    fn documented() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
        std::fs::read_to_string(path).expect("docs/metrics.md is in the repository")
    }

    /// The rows of the docs' metric table: (name as queried, type, labels cell).
    fn documented_rows(docs: &str) -> Vec<(String, String, String)> {
        docs.lines()
            .filter(|line| line.starts_with("| `mt_stream_"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2].to_owned(), cells[4].to_owned())
            })
            .collect()
    }

    /// Every metric the registry renders, as users query it (counters with `_total`), with its
    /// type: read from the `# TYPE` lines of a real exposition.
    fn registered() -> Vec<(String, String)> {
        let mut registry = Registry::default();
        let _metrics = Metrics::new(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("the registry encodes");
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let name = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
                (name, kind.to_owned())
            })
            .collect()
    }

    /// The metric table of docs/metrics.md is the registry: same names, same types, in any
    /// order; a metric added to the code without a row (or a row left after a removal) fails.
    #[test]
    fn docs_list_exactly_the_registered_metrics() {
        let docs = documented();
        let mut rows: Vec<(String, String)> =
            documented_rows(&docs).into_iter().map(|(name, kind, _)| (name, kind)).collect();
        let mut code = registered();
        rows.sort();
        code.sort();
        assert!(code.len() > 20, "the registry renders every metric: {code:?}");
        assert_eq!(rows, code, "docs/metrics.md's table must list exactly the registered metrics");
    }

    /// Every value of a closed label set is documented on its metric's row.
    #[test]
    fn docs_list_every_label_value() {
        let docs = documented();
        let rows = documented_rows(&docs);
        let labels = |metric: &str| {
            rows.iter().find(|(name, _, _)| name == metric).map(|(_, _, labels)| labels.clone()).unwrap_or_default()
        };
        let closed = labels("mt_stream_connections_closed_total");
        for reason in CloseReason::ALL {
            assert!(closed.contains(&format!("`{}`", reason.as_str())), "close reason {reason:?} undocumented");
        }
        let resumes = labels("mt_stream_resumes_total");
        for outcome in ResumeOutcome::all() {
            assert!(resumes.contains(&format!("`{}`", outcome.as_str())), "resume outcome {outcome:?} undocumented");
        }
        let auth = labels("mt_stream_auth_failures_total");
        for reason in AuthFailure::ALL {
            assert!(auth.contains(&format!("`{}`", reason.as_str())), "auth failure {reason:?} undocumented");
        }
        let deliveries = labels("mt_stream_github_webhook_deliveries_total");
        for result in crate::github::metrics::DeliveryResult::ALL {
            assert!(deliveries.contains(&format!("`{}`", result.as_str())), "delivery result {result:?} undocumented");
        }
        let requests = labels("mt_stream_github_requests_total");
        for status in crate::github::metrics::STATUSES {
            assert!(requests.contains(&format!("`{status}`")), "request status {status} undocumented");
        }
        let rejected = labels("mt_stream_connections_rejected_total");
        for reason in RejectReason::ALL {
            assert!(rejected.contains(&format!("`{}`", reason.as_str())), "reject reason {reason:?} undocumented");
        }
    }
}
