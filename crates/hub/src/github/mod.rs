//! The GitHub source: Monkeytown's GitHub activity as channels like any other (fanned out,
//! kept in history, resumable, guarded by the same grants). `docs/github.md` is the user's guide.
//!
//! - [`webhook`]: `POST /github/webhook`, the real-time path: signature, limits, publish.
//! - [`leader`] and [`poller`]: the fallback: one pod (the lease holder) polls the Events API
//!   for `MT_GITHUB_REPOS`, with ETags, GitHub's poll interval, rate limits and backoff.
//! - [`api`]: the HTTP requests to the API; [`event`]: the compact event clients receive and
//!   its channels; [`store`]: lease, cursors and webhook times (Redis, or memory);
//!   [`signature`]: `X-Hub-Signature-256`; [`settings`]; [`metrics`].
//!
//! Both paths publish through [`Github::publish`]: every channel of the event, each at most once
//! per key (`delivery:<X-GitHub-Delivery>` or `event:<id>`) across every pod
//! ([`crate::source::Source::publish_once`]). Nothing here touches readiness: GitHub being down
//! or rate-limited is not the pod's fault.

pub mod api;
pub mod event;
pub mod leader;
pub mod metrics;
pub mod poller;
pub mod settings;
pub mod signature;
pub mod store;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::event_id::{now_ms, EventId};
use crate::server::App;
use crate::source::{PublishError, PublishOnce, Source};
use event::Activity;
use metrics::GithubMetrics;
use settings::GithubSettings;
use store::Store;

/// What publishing one GitHub event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent (on at least one of its channels); the id on the repository's channel.
    Published(Option<EventId>),
    /// Every channel had it already.
    Duplicate,
    /// The repository's name makes no valid channel name.
    NoChannel,
}

/// The GitHub source's shared state.
pub struct Github {
    pub settings: GithubSettings,
    pub store: Store,
    pub metrics: GithubMetrics,
    /// Webhook bodies being read ([`webhook::CONCURRENT_UPLOADS`]).
    pub uploads: Semaphore,
}

impl Github {
    /// The state for `source`: in its Redis (keys under `{<prefix>github}`), else in memory.
    pub fn new(settings: GithubSettings, source: &Source, prefix: &str, metrics: GithubMetrics) -> Self {
        let store = match source {
            Source::Redis(redis) => Store::redis(redis.commands().clone(), prefix),
            Source::Embedded(_) => Store::memory(),
        };
        Self { settings, store, metrics, uploads: Semaphore::new(webhook::CONCURRENT_UPLOADS) }
    }

    /// Publishes `activity` on each of its channels, at most once per `once` within `remember`.
    pub async fn publish(
        &self,
        source: &Source,
        activity: &Activity,
        once: &str,
        remember: Duration,
    ) -> Result<Outcome, PublishError> {
        let channels = activity.channels();
        let payload = activity.to_json();
        let (mut published, mut id) = (false, None);
        for (i, channel) in channels.iter().enumerate() {
            if let PublishOnce::Published(got) = source.publish_once(channel, payload.clone(), once, remember).await? {
                published = true;
                if i == 0 {
                    id = got;
                }
            }
        }
        let outcome = match (channels.is_empty(), published) {
            (true, _) => Outcome::NoChannel,
            (false, true) => Outcome::Published(id),
            (false, false) => Outcome::Duplicate,
        };
        if matches!(outcome, Outcome::Published(_)) {
            self.metrics.published(activity.via);
        }
        Ok(outcome)
    }

    /// Whether a webhook that last delivered at `last_ms` still counts as delivering (within
    /// `MT_GITHUB_WEBHOOK_SILENCE_SECONDS`): its repository is then not polled.
    pub fn webhook_active(&self, last_ms: u64) -> bool {
        now_ms().saturating_sub(last_ms) < self.settings.webhook_silence.as_millis() as u64
    }

    /// Notes a webhook delivery for the repository `full_name` (pauses its polling).
    pub async fn webhook_seen(&self, full_name: &str) {
        if let Err(error) = self.store.mark_webhook(&full_name.to_ascii_lowercase(), now_ms()).await {
            tracing::debug!(%error, "could not note the webhook's delivery time");
        }
    }
}

/// Starts polling (the lease loop) when `MT_GITHUB_REPOS` names anything.
pub fn start(app: &Arc<App>) {
    let github = Arc::clone(&app.github);
    if github.settings.poll.is_empty() {
        return;
    }
    if github.settings.token.is_none() {
        tracing::warn!(
            "MT_GITHUB_REPOS is set without GITHUB_TOKEN: unauthenticated polling gets 60 requests per hour"
        );
    }
    app.shutdown.spawn(leader::run(Arc::clone(app), github));
}
