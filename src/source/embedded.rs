//! The embedded in-process broker: a publish goes straight into this pod's hub. It keeps no
//! state of its own beyond the time of the last event; ordering and ids are the hub's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::LastEvent;
use crate::hub::Hub;
use crate::protocol::ChannelName;

/// The broker used when no Redis is configured.
pub struct EmbeddedBroker {
    hub: Arc<Hub>,
    last_event: LastEvent,
}

impl EmbeddedBroker {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub, last_event: LastEvent::default() }
    }

    /// Delivers an event to this pod's subscribers.
    pub fn publish(&self, channel: &ChannelName, payload: &[u8]) {
        let now = Instant::now();
        self.last_event.mark(now);
        self.hub.metrics.messages_published.inc();
        self.hub.publish(channel, payload, now);
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        self.last_event.age()
    }
}
