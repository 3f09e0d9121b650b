//! Polling one target (`owner/repo` or an organisation) through the Events API, while this pod
//! holds the lease ([`super::leader`]).
//!
//! Each round: skipped while the repository's webhook delivers (within
//! `MT_GITHUB_WEBHOOK_SILENCE_SECONDS`); else the first page with `If-None-Match` (a 304 costs
//! no rate limit), then, when the page's oldest event is still newer than the cursor, the next
//! pages (at most [`MAX_PAGES`], the 300 events the API keeps). New events are published oldest
//! first, each once (`event:<id>`, atomic with the publish, so a hand-over between pods never
//! publishes one twice), then the cursor (ETag, newest id) is saved, only while the lease is
//! still ours. A target polled for the first time starts from its newest event.
//!
//! The next round waits `X-Poll-Interval` (60 s without one); after a failure, that doubled per
//! failure in a row up to [`MAX_BACKOFF`]; `Retry-After` on a 403 or 429 as given; an exhausted
//! rate limit pauses every target until `x-ratelimit-reset`. A change of state is logged once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Api, Page};
use super::event::{epoch_ms, Activity, ApiEvent};
use super::settings::PollTarget;
use super::store::Cursor;
use super::{Github, Outcome};
use crate::event_id::now_ms;
use crate::lock::lock;
use crate::server::App;

/// Poll interval when GitHub sends no `X-Poll-Interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait after failures in a row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(900);
/// Pages read per round: the Events API keeps 300 events.
pub const MAX_PAGES: usize = 3;
/// How long a polled event's id is remembered against publishing it twice.
pub const EVENT_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// What the pollers of one leadership share.
pub struct PollContext {
    pub app: Arc<App>,
    pub github: Arc<Github>,
    pub api: Api,
    /// This pod's lease value.
    pub holder: String,
    /// No request before this (an exhausted rate limit is the token's, for every target).
    pub paused_until: Mutex<Option<Instant>>,
    /// Cancelled when the lease is lost or the pod stops.
    pub leading: CancellationToken,
}

impl PollContext {
    fn pause_until(&self, at: Instant) {
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|p| p < at) {
            *paused = Some(at);
        }
    }

    /// Reads the rate-limit headers: the gauge, and a pause when none is left.
    fn note_rate(&self, page: &Page) {
        if let Some(remaining) = page.rate_remaining {
            self.github.metrics.rate_limit_remaining.set(remaining.min(i64::MAX as u64) as i64);
        }
        if let (Some(0), Some(reset)) = (page.rate_remaining, page.rate_reset) {
            self.pause_until(instant_of_epoch(reset));
        }
    }
}

/// The instant of a time in seconds since the epoch (a second later, for clock skew).
fn instant_of_epoch(epoch_seconds: u64) -> Instant {
    let wait_ms = (epoch_seconds * 1000).saturating_sub(now_ms()) + 1000;
    Instant::now() + Duration::from_millis(wait_ms.min(MAX_BACKOFF.as_millis() as u64 * 4))
}

/// A target's state, logged when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Starting,
    Polling,
    WebhookActive,
    RateLimited,
    /// Failing with this status label (the detail is logged, not compared).
    Failing(&'static str),
}

pub struct Poller {
    ctx: Arc<PollContext>,
    target: PollTarget,
    key: String,
    cursor: Option<Cursor>,
    interval: Duration,
    failures: u32,
    health: Health,
}

impl Poller {
    pub fn new(ctx: Arc<PollContext>, target: PollTarget) -> Self {
        let key = target.key();
        Self { ctx, target, key, cursor: None, interval: DEFAULT_INTERVAL, failures: 0, health: Health::Starting }
    }

    /// Polls until the leadership ends.
    pub async fn run(mut self) {
        let mut next = Instant::now();
        loop {
            let at = lock(&self.ctx.paused_until).map_or(next, |paused| paused.max(next));
            let leading = self.ctx.leading.clone();
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = leading.cancelled() => return,
            }
            let wait = tokio::select! {
                wait = self.round() => wait,
                _ = leading.cancelled() => return,
            };
            next = Instant::now() + wait;
        }
    }

    fn set_health(&mut self, health: Health, detail: &str) {
        if health == self.health {
            return;
        }
        let target = self.key.as_str();
        match &health {
            Health::Starting => {}
            Health::Polling => tracing::info!(target, "GitHub polling works"),
            Health::WebhookActive => tracing::info!(target, "GitHub webhook delivers: polling paused"),
            Health::RateLimited => tracing::warn!(target, detail, "GitHub rate limit: polling waits"),
            Health::Failing(_) => tracing::warn!(target, detail, "GitHub polling fails: backing off"),
        }
        self.health = health;
    }

    fn succeeded(&mut self) -> Duration {
        self.failures = 0;
        self.set_health(Health::Polling, "");
        self.interval
    }

    /// The wait after one more failure in a row.
    fn failed(&mut self, status: &'static str, detail: &str) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.set_health(Health::Failing(status), detail);
        let factor = 1u32 << self.failures.min(10);
        (self.interval * factor).min(MAX_BACKOFF)
    }

    /// One round; returns the wait before the next.
    async fn round(&mut self) -> Duration {
        let github = Arc::clone(&self.ctx.github);
        if let Some(repo) = self.target.repo() {
            if let Ok(Some(at)) = github.store.last_webhook(&repo).await {
                if github.webhook_active(at) {
                    self.set_health(Health::WebhookActive, "");
                    return self.interval;
                }
            }
        }
        let cursor = match &self.cursor {
            Some(cursor) => cursor.clone(),
            None => match github.store.cursor(&self.key).await {
                Ok(cursor) => cursor,
                Err(error) => return self.failed("error", &error.to_string()),
            },
        };
        let url = self.ctx.api.first_page(&self.target.events_path());
        let page = match self.fetch(&url, cursor.etag.as_deref()).await {
            Ok(page) => page,
            Err(detail) => return self.failed("error", &detail),
        };
        if let Some(interval) = page.poll_interval {
            self.interval = interval.max(Duration::from_secs(1));
        }
        let status = super::metrics::status_label(Some(page.status));
        match page.status {
            304 => self.succeeded(),
            200 => self.take(page, cursor).await,
            403 | 429 if page.retry_after.is_some() => {
                let wait = page.retry_after.unwrap_or_default().max(Duration::from_secs(1));
                self.set_health(Health::RateLimited, &format!("HTTP {} with Retry-After {wait:?}", page.status));
                wait
            }
            403 | 429 if page.rate_remaining == Some(0) => {
                self.set_health(
                    Health::RateLimited,
                    &format!("HTTP {}: no requests left until the reset", page.status),
                );
                self.interval
            }
            code => {
                let detail = String::from_utf8_lossy(&page.body[..page.body.len().min(200)]).into_owned();
                self.failed(status, &format!("HTTP {code}: {detail}"))
            }
        }
    }

    /// One request, counted and its rate-limit headers read.
    async fn fetch(&self, url: &str, etag: Option<&str>) -> Result<Page, String> {
        match self.ctx.api.get(url, etag).await {
            Ok(page) => {
                self.ctx.github.metrics.request(Some(page.status));
                self.ctx.note_rate(&page);
                Ok(page)
            }
            Err(error) => {
                self.ctx.github.metrics.request(None);
                Err(error.to_string())
            }
        }
    }

    /// A 200: reads the further pages needed, publishes what is new, saves the cursor.
    async fn take(&mut self, first: Page, cursor: Cursor) -> Duration {
        let Ok(mut events) = serde_json::from_slice::<Vec<ApiEvent>>(&first.body) else {
            return self.failed("200", "the events page is not a JSON array of events");
        };
        let newest = cursor.newest;
        let (mut next, mut pages) = (first.next.clone(), 1);
        while let (Some(url), Some(newest)) = (next.take(), newest) {
            let oldest = events.iter().filter_map(ApiEvent::number).min();
            if pages >= MAX_PAGES || oldest.is_none_or(|oldest| oldest <= newest) {
                if pages >= MAX_PAGES && oldest.is_some_and(|oldest| oldest > newest) {
                    tracing::warn!(
                        target = self.key,
                        "more new events than the Events API lists (300): some between the cursor and them may be lost"
                    );
                }
                break;
            }
            let page = match self.fetch(&url, None).await {
                Ok(page) if page.status == 200 => page,
                Ok(page) => {
                    return self.failed(super::metrics::status_label(Some(page.status)), "a further page failed")
                }
                Err(detail) => return self.failed("error", &detail),
            };
            match serde_json::from_slice::<Vec<ApiEvent>>(&page.body) {
                Ok(more) => events.extend(more),
                Err(_) => return self.failed("200", "a further events page is not a JSON array of events"),
            }
            next = page.next;
            pages += 1;
        }
        let mut fresh: Vec<(u64, ApiEvent)> = events
            .into_iter()
            .filter_map(|event| Some((event.number()?, event)))
            .filter(|(id, _)| newest.is_none_or(|newest| *id > newest))
            .collect();
        fresh.sort_by_key(|(id, _)| *id);
        fresh.dedup_by_key(|(id, _)| *id);
        // A target with no events yet starts from 0: its first events are all new.
        let top = fresh.last().map(|(id, _)| *id).max(newest).or(Some(0));
        // A target seen for the first time starts from its newest event.
        if newest.is_some() {
            let mut webhooks: HashMap<String, Option<u64>> = HashMap::new();
            for (id, event) in &fresh {
                if self.covered_by_webhook(event, &mut webhooks).await {
                    continue;
                }
                let Some(activity) = Activity::from_api(event) else { continue };
                let github = &self.ctx.github;
                match github.publish(&self.ctx.app.source, &activity, &format!("event:{id}"), EVENT_MEMORY).await {
                    Ok(Outcome::Published(_)) => {
                        if let Some(created) = event.created_at.as_deref().and_then(epoch_ms) {
                            let lag = now_ms().saturating_sub(created) as f64 / 1000.0;
                            github.metrics.poll_lag_seconds.observe(lag);
                        }
                    }
                    Ok(Outcome::Duplicate | Outcome::NoChannel) => {}
                    Err(error) => return self.failed("error", &format!("publish failed: {error}")),
                }
            }
        }
        let saved = Cursor { etag: first.etag.clone(), newest: top };
        match self.ctx.github.store.save_cursor(&self.ctx.holder, &self.key, &saved).await {
            Ok(true) => {
                self.cursor = Some(saved);
                self.succeeded()
            }
            Ok(false) => {
                tracing::warn!(target = self.key, "the GitHub poller's lease was taken over: polling stops here");
                self.ctx.leading.cancel();
                self.interval
            }
            Err(error) => self.failed("error", &format!("saving the cursor failed: {error}")),
        }
    }

    /// Whether the event's repository has a webhook that delivered it (or delivers now):
    /// polling fills only the time after a webhook's last delivery.
    async fn covered_by_webhook(&self, event: &ApiEvent, cache: &mut HashMap<String, Option<u64>>) -> bool {
        let repo = event.repo.name.to_ascii_lowercase();
        let last = match cache.get(&repo) {
            Some(last) => *last,
            None => {
                let last = self.ctx.github.store.last_webhook(&repo).await.ok().flatten();
                cache.insert(repo, last);
                last
            }
        };
        let Some(last) = last else { return false };
        let created = event.created_at.as_deref().and_then(epoch_ms);
        self.ctx.github.webhook_active(last) || created.is_none_or(|created| created <= last)
    }
}
