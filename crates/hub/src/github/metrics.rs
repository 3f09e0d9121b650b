//! The GitHub source's metrics (`mt_stream_github_*`), registered with the hub's by
//! [`crate::metrics::Metrics::new`]. Labels are closed sets: never a repository or a token.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What became of one webhook delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Published on its channels.
    Published,
    /// A redelivery of a delivery already published: answered 200, nothing sent.
    Duplicate,
    /// GitHub's `ping` on creating the webhook.
    Ping,
    /// Signed and valid, but about no repository (nothing to publish).
    Ignored,
    /// Unsigned, or signed with another secret (401).
    BadSignature,
    /// Over the body limit (413).
    TooLarge,
    /// Not `application/json` (415).
    UnsupportedType,
    /// Signed but malformed: no event name or delivery id, or not JSON (400).
    BadRequest,
    /// Redis could not take the event (503; GitHub shows the delivery as failed).
    Unavailable,
}

impl DeliveryResult {
    pub const ALL: [Self; 9] = [
        Self::Published,
        Self::Duplicate,
        Self::Ping,
        Self::Ignored,
        Self::BadSignature,
        Self::TooLarge,
        Self::UnsupportedType,
        Self::BadRequest,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Duplicate => "duplicate",
            Self::Ping => "ping",
            Self::Ignored => "ignored",
            Self::BadSignature => "bad_signature",
            Self::TooLarge => "too_large",
            Self::UnsupportedType => "unsupported_type",
            Self::BadRequest => "bad_request",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub result: &'static str,
}

/// An API answer's status as a label: the codes the poller treats apart, else its class.
pub const STATUSES: [&str; 9] = ["200", "304", "401", "403", "404", "429", "4xx", "5xx", "error"];

pub fn status_label(status: Option<u16>) -> &'static str {
    match status {
        Some(200) => "200",
        Some(304) => "304",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(429) => "429",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        // No answer (connection, TLS, timeout) or an unexpected class.
        _ => "error",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabels {
    pub via: &'static str,
}

#[derive(Clone)]
pub struct GithubMetrics {
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub requests: Family<StatusLabels, Counter>,
    pub events_published: Family<ViaLabels, Counter>,
    pub rate_limit_remaining: Gauge,
    pub poller_leader: Gauge,
    pub poll_lag_seconds: Histogram,
}

impl GithubMetrics {
    /// Registers under `registry` (the `mt_stream` sub-registry), every label value at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            webhook_deliveries: Family::default(),
            requests: Family::default(),
            events_published: Family::default(),
            rate_limit_remaining: Gauge::default(),
            poller_leader: Gauge::default(),
            // 0.25 s .. ~17 min
            poll_lag_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 13)),
        };
        registry.register(
            "github_webhook_deliveries",
            "GitHub webhook deliveries, by result",
            metrics.webhook_deliveries.clone(),
        );
        registry.register("github_requests", "Requests to the GitHub API, by status", metrics.requests.clone());
        registry.register(
            "github_events_published",
            "GitHub events published, by path (webhook or poll)",
            metrics.events_published.clone(),
        );
        registry.register(
            "github_rate_limit_remaining",
            "GitHub API requests left in the current rate-limit window (x-ratelimit-remaining)",
            metrics.rate_limit_remaining.clone(),
        );
        registry.register(
            "github_poller_leader",
            "1 while this pod holds the poller's lease and polls GitHub",
            metrics.poller_leader.clone(),
        );
        registry.register(
            "github_poll_lag_seconds",
            "From a polled event's creation at GitHub to its publish here",
            metrics.poll_lag_seconds.clone(),
        );
        for result in DeliveryResult::ALL {
            let _ = metrics.webhook_deliveries.get_or_create(&DeliveryLabels { result: result.as_str() });
        }
        for status in STATUSES {
            let _ = metrics.requests.get_or_create(&StatusLabels { status });
        }
        for via in ["webhook", "poll"] {
            let _ = metrics.events_published.get_or_create(&ViaLabels { via });
        }
        metrics
    }

    pub fn delivery(&self, result: DeliveryResult) {
        self.webhook_deliveries.get_or_create(&DeliveryLabels { result: result.as_str() }).inc();
    }

    pub fn request(&self, status: Option<u16>) {
        self.requests.get_or_create(&StatusLabels { status: status_label(status) }).inc();
    }

    pub fn published(&self, via: &'static str) {
        self.events_published.get_or_create(&ViaLabels { via }).inc();
    }
}
