//! The embedded in-process broker: a publish goes straight into this pod's hub, and into the
//! in-memory history when the channel keeps one (appended first, so a resume that reads
//! history and then goes live sees every event exactly once; see `crate::hub`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::LastEvent;
use crate::event_id::{self, EventId};
use crate::history::memory::MemoryHistory;
use crate::hub::Hub;
use crate::protocol::ChannelName;

/// The broker used when no Redis is configured.
pub struct EmbeddedBroker {
    hub: Arc<Hub>,
    history: Arc<MemoryHistory>,
    last_event: LastEvent,
    /// Makes append-then-fan-out one step, so live order is history order.
    publishing: Mutex<()>,
}

impl EmbeddedBroker {
    pub fn new(hub: Arc<Hub>, history: Arc<MemoryHistory>) -> Self {
        Self { hub, history, last_event: LastEvent::default(), publishing: Mutex::new(()) }
    }

    /// Delivers an event to this pod's subscribers; returns its id when history keeps it.
    pub fn publish(&self, channel: &ChannelName, payload: Bytes) -> Option<EventId> {
        let _one_at_a_time = crate::lock::lock(&self.publishing);
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
