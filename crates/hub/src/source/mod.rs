//! Event sources: where the hub's events come from and where publishes go.
//!
//! - [`embedded`]: the in-process broker, used when no `REDIS_URL` is set; publishes reach this
//!   pod's clients only.
//! - [`redis`]: Redis (one server, Sentinel, or Cluster with sharded pub/sub) through fred;
//!   subscribes to `<prefix><channel>` only while a local client wants the channel, resubscribes
//!   after reconnects, failovers and slot moves, and proves each subscription works end to end
//!   with a canary event.
//!
//! Both report readiness the same way ([`Source::readiness`]).

pub mod embedded;
pub mod redis;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event_id::EventId;
use crate::lock::lock;
use crate::protocol::ChannelName;

/// When the source last handed the hub an event (`None`: not since start or since the last
/// reconnect), and since when it has been waiting for one. Written on every event, read by
/// readiness and the metrics.
pub struct LastEvent(Mutex<(Option<Instant>, Instant)>);

impl Default for LastEvent {
    fn default() -> Self {
        Self(Mutex::new((None, Instant::now())))
    }
}

impl LastEvent {
    pub fn mark(&self, at: Instant) {
        lock(&self.0).0 = Some(at);
    }

    /// Forgets the last event: a new connection must prove itself, counted from now.
    pub fn forget(&self) {
        *lock(&self.0) = (None, Instant::now());
    }

    pub fn get(&self) -> Option<Instant> {
        lock(&self.0).0
    }

    /// How long the source has gone without an event: since the last one, or since it started
    /// waiting (start-up, or the last reconnect) when none came yet.
    pub fn silence(&self) -> Duration {
        let (last, waiting_since) = *lock(&self.0);
        last.unwrap_or(waiting_since).elapsed()
    }

    /// `Some(silence)` when no event came within `limit` (or none since the last reconnect):
    /// the subscription is not proven working. The one freshness rule of every readiness check.
    pub fn stale(&self, limit: Duration) -> Option<Duration> {
        match (self.get(), self.silence()) {
            (Some(_), silence) if silence <= limit => None,
            (_, silence) => Some(silence),
        }
    }

    pub fn age(&self) -> Option<Duration> {
        self.get().map(|at| at.elapsed())
    }
}

/// Why the source cannot serve right now (the readiness answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("redis disconnected")]
    RedisDisconnected,
    #[error("redis subscription silent: no canary for {0:?}")]
    SubscriptionSilent(Duration),
    #[error("redis shard {0} disconnected")]
    ShardDisconnected(String),
    #[error("redis shard {shard} silent: no canary for {silence:?}")]
    ShardSilent { shard: String, silence: Duration },
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis publish timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis publish with history failed: {0}")]
    History(#[from] crate::history::HistoryError),
}

/// What [`Source::publish_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOnce {
    /// Published (with its id when the channel keeps history).
    Published(Option<EventId>),
    /// An event with the same key was published on the channel before: nothing was sent.
    Duplicate,
}

/// The active source.
pub enum Source {
    Embedded(embedded::EmbeddedBroker),
    Redis(redis::RedisSource),
}

impl Source {
    /// Publishes one event to every pod that shares this source; returns its id when the
    /// channel keeps history.
    pub async fn publish(&self, channel: &ChannelName, payload: Bytes) -> Result<Option<EventId>, PublishError> {
        match self {
            Self::Embedded(broker) => Ok(broker.publish(channel, payload)),
            Self::Redis(redis) => redis.publish(channel, payload).await,
        }
    }

    /// As [`Source::publish`], unless an event with the key `once` was published on `channel`
    /// within `remember`, by any pod sharing this source (atomic: the check and the publish are
    /// one step).
    pub async fn publish_once(
        &self,
        channel: &ChannelName,
        payload: Bytes,
        once: &str,
        remember: Duration,
    ) -> Result<PublishOnce, PublishError> {
        match self {
            Self::Embedded(broker) => Ok(broker.publish_once(channel, payload, once, remember)),
            Self::Redis(redis) => redis.publish_once(channel, payload, once, remember).await,
        }
    }

    /// `Ok` while events flow from the source.
    pub fn readiness(&self) -> Result<(), NotReady> {
        match self {
            Self::Embedded(_) => Ok(()),
            Self::Redis(redis) => redis.readiness(),
        }
    }

    /// Seconds since the source last handed the hub an event (canaries included).
    pub fn last_event_age(&self) -> Option<Duration> {
        match self {
            Self::Embedded(broker) => broker.last_event_age(),
            Self::Redis(redis) => redis.last_event_age(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Silence counts from the last event, or, once a reconnect forgot it, from the reconnect:
    /// never from a start long ago (which made every recovery look like a 5 s silence).
    #[test]
    fn silence_counts_from_the_last_reconnect() {
        let long_ago = Instant::now() - Duration::from_secs(60);
        let last = LastEvent(Mutex::new((Some(long_ago + Duration::from_secs(50)), long_ago)));
        assert!(last.silence() >= Duration::from_secs(10));
        last.forget();
        assert!(last.silence() < Duration::from_secs(5), "{:?}", last.silence());
        assert_eq!(last.get(), None);
        let waiting = LastEvent(Mutex::new((None, long_ago)));
        assert!(waiting.silence() >= Duration::from_secs(60));
    }
}
