//! What a queue holds: one framed message ([`Event`]), shared by every queue it is pushed to,
//! and what kind of frame it is.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::event_id::EventId;
use crate::protocol::ChannelName;

/// One framed message, shared by every queue it is pushed to.
#[derive(Debug)]
pub struct Event {
    /// The complete WebSocket frame.
    pub frame: Bytes,
    /// When the source handed it to the hub (delivery lag is measured from here).
    pub received_at: Instant,
    pub kind: EventKind,
}

/// What a queued frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A reply or control frame.
    Control,
    /// A channel event (counted as a delivery).
    Delivery { channel: ChannelName, id: EventId, conflate: bool },
    /// A `skipped` notice left by conflation.
    Skipped(Skip),
}

/// Events of one channel dropped by conflation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub channel: ChannelName,
    pub count: u64,
    pub from: EventId,
    pub to: EventId,
}

impl Event {
    /// A reply or control frame for one connection.
    pub fn control(frame: Bytes) -> Arc<Self> {
        Arc::new(Self { frame, received_at: Instant::now(), kind: EventKind::Control })
    }

    /// A channel event (its frame built by [`protocol::encode_event`]).
    pub fn delivery(
        frame: Bytes,
        received_at: Instant,
        channel: ChannelName,
        id: EventId,
        conflate: bool,
    ) -> Arc<Self> {
        Arc::new(Self { frame, received_at, kind: EventKind::Delivery { channel, id, conflate } })
    }

    pub fn is_delivery(&self) -> bool {
        matches!(self.kind, EventKind::Delivery { .. })
    }

    /// The channel and id of a delivery.
    pub fn delivery_id(&self) -> Option<(&ChannelName, EventId)> {
        match &self.kind {
            EventKind::Delivery { channel, id, .. } => Some((channel, *id)),
            _ => None,
        }
    }

    pub(super) fn conflated_channel(&self) -> Option<&ChannelName> {
        match &self.kind {
            EventKind::Delivery { channel, conflate: true, .. } => Some(channel),
            EventKind::Skipped(skip) => Some(&skip.channel),
            _ => None,
        }
    }
}
