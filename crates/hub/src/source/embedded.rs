//! The embedded in-process broker: a publish goes straight into this pod's hub, and into the
//! in-memory history when the channel keeps one (appended first, so a resume that reads
//! history and then goes live sees every event exactly once; see `crate::hub`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LastEvent, PublishOnce};
use crate::event_id::{self, EventId};
use crate::history::memory::MemoryHistory;
use crate::hub::Hub;
use crate::protocol::ChannelName;

/// The broker used when no Redis is configured.
pub struct EmbeddedBroker {
    hub: Arc<Hub>,
    history: Arc<MemoryHistory>,
    last_event: LastEvent,
    /// Makes append-then-fan-out one step, so live order is history order; holds the keys of
    /// [`EmbeddedBroker::publish_once`] (channel and key → forgotten at).
    publishing: Mutex<HashMap<(ChannelName, String), Instant>>,
}

/// Keys remembered before the expired ones are swept.
const ONCE_SWEEP_AT: usize = 4096;

impl EmbeddedBroker {
    pub fn new(hub: Arc<Hub>, history: Arc<MemoryHistory>) -> Self {
        Self { hub, history, last_event: LastEvent::default(), publishing: Mutex::new(HashMap::new()) }
    }

    /// Delivers an event to this pod's subscribers; returns its id when history keeps it.
    pub fn publish(&self, channel: &ChannelName, payload: Bytes) -> Option<EventId> {
        let _one_at_a_time = crate::lock::lock(&self.publishing);
        self.publish_locked(channel, payload)
    }

    /// Publishes unless `once` was published on `channel` within `remember`.
    pub fn publish_once(&self, channel: &ChannelName, payload: Bytes, once: &str, remember: Duration) -> PublishOnce {
        let mut seen = crate::lock::lock(&self.publishing);
        let now = Instant::now();
        // Swept when the map doubles past the threshold: amortised O(1) per publish.
        if seen.len() >= ONCE_SWEEP_AT && seen.len().is_power_of_two() {
            seen.retain(|_, until| *until > now);
        }
        let key = (channel.clone(), once.to_owned());
        if seen.get(&key).is_some_and(|until| *until > now) {
            return PublishOnce::Duplicate;
        }
        seen.insert(key, now + remember);
        PublishOnce::Published(self.publish_locked(channel, payload))
    }

    fn publish_locked(&self, channel: &ChannelName, payload: Bytes) -> Option<EventId> {
        let now = Instant::now();
        self.last_event.mark(now);
        self.hub.metrics.messages_published.inc();
        let id = self
            .hub
            .policies()
            .keeps_history(channel)
            .then(|| self.history.append(channel, payload.clone(), event_id::now_ms()));
        self.hub.publish(channel, id, &payload, now);
        id
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        self.last_event.age()
    }
}
