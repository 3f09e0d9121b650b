//! Publishing an event to a channel's subscribers: framed once under the channel's lock (which
//! fixes its id and so the per-channel order), the same bytes pushed to every live subscriber's
//! queue, and to each recovering subscription through its seam; the flusher
//! ([`super::flusher`]) writes them out.

use std::sync::Arc;
use std::time::Instant;

use super::client::Client;
use super::registry::{Channel, ChannelInner, Recovering};
use super::seam::{LiveEvent, Seam};
use super::Hub;
use crate::event_id::{self, EventId};
use crate::lock::lock;
use crate::outbound::{Event, Push};
use crate::protocol::{self, ChannelName};

/// Most live bytes a catching-up channel holds back before it reads history further instead.
pub(super) const CATCH_UP_BUFFER: usize = 4 << 20;

/// Holds a live event for a resuming subscription, charged to its client: when the client's
/// holds (all its resuming channels together) would pass half its queue cap, this seam lets go
/// of everything it held instead (history has it; the resume reads further), so what a client
/// can make the hub hold is bounded by its own cap, whatever number of channels it resumes.
fn hold_for(recovering: &mut Recovering, id: Option<EventId>, event: &Arc<Event>) {
    let seam = &mut recovering.seam;
    if seam.is_overflowed() {
        return;
    }
    if recovering.client.outbound.try_hold(Seam::cost(event)) {
        seam.hold(id, event);
    } else {
        let freed = seam.overflow();
        recovering.client.outbound.release_held(freed);
    }
}

impl Hub {
    /// Fans an event out to the channel's subscribers; returns how many queues took it. `id` is
    /// the event's history id; without one (a channel without history, or a plain Redis
    /// PUBLISH) the hub makes one up that follows the channel's last. An id at or below the
    /// newest already delivered is a duplicate and is dropped.
    pub fn publish(&self, channel: &ChannelName, id: Option<EventId>, payload: &[u8], received_at: Instant) -> usize {
        self.metrics.messages_received.inc();
        let Some(channel_state) = self.channel(channel) else { return 0 };
        let inner = &mut *lock(&channel_state.inner);
        let mut held_back = false;
        match (&inner.catch_up, id) {
            (Some(seam), _) => match seam.on_live(id) {
                LiveEvent::Hold => held_back = true,
                LiveEvent::Skip => return 0,
                LiveEvent::GoLive => inner.catch_up = None,
            },
            (None, Some(id)) if id <= inner.delivered_id => return 0,
            (None, _) => {}
        }
        if let Some(id) = id {
            inner.delivered_id = inner.delivered_id.max(id);
        }
        let assigned = id.unwrap_or_else(|| EventId::next_after(inner.last_id, event_id::now_ms()));
        inner.last_id = inner.last_id.max(assigned);
        let event = self.event(channel, &channel_state, assigned, payload, received_at);
        match &mut inner.catch_up {
            Some(seam) if held_back => {
                seam.hold_within(id, &event, CATCH_UP_BUFFER);
                0
            }
            _ => self.fan_out(inner, id, &event),
        }
    }

    /// The shared, framed event.
    pub(super) fn event(
        &self,
        channel: &ChannelName,
        channel_state: &Channel,
        id: EventId,
        payload: &[u8],
        received_at: Instant,
    ) -> Arc<Event> {
        let mut id_text = [0u8; event_id::MAX_ID_LEN];
        let frame = protocol::encode_event(channel, id.write(&mut id_text), payload);
        Event::delivery(frame, received_at, channel.clone(), id, channel_state.conflate)
    }

    /// Pushes an event (`id`: its history id, if any) to every live subscriber, and to the
    /// recovering ones through their seams.
    pub(super) fn fan_out(&self, inner: &mut ChannelInner, id: Option<EventId>, event: &Arc<Event>) -> usize {
        let mut queued = 0;
        for client in &inner.subscribers {
            queued += self.push(client, event) as usize;
        }
        let mut went_live = Vec::new();
        for (at, recovering) in inner.recovering.iter_mut().enumerate() {
            match recovering.seam.on_live(id) {
                LiveEvent::Hold => hold_for(recovering, id, event),
                LiveEvent::Skip => {}
                LiveEvent::GoLive => {
                    queued += self.push(&recovering.client, event) as usize;
                    went_live.push(at);
                }
            }
        }
        for at in went_live.into_iter().rev() {
            let recovering = inner.recovering.swap_remove(at);
            recovering.client.outbound.release_held(recovering.seam.bytes());
            inner.subscribers.push(recovering.client);
        }
        queued
    }

    /// Queues an event for one connection, and puts the connection on its flusher's list when
    /// nothing else will write it; returns whether it was queued.
    pub(super) fn push(&self, client: &Arc<Client>, event: &Arc<Event>) -> bool {
        let (push, schedule) = client.outbound.push_for_flusher(event);
        if schedule {
            self.flushers.schedule(client, &self.metrics);
        }
        match push {
            Push::Queued => true,
            Push::Conflated => {
                self.metrics.conflations.inc();
                true
            }
            Push::Overflowed => {
                tracing::info!(client = client.id.0, "slow consumer: closing with 4008");
                false
            }
            Push::Closed => false,
        }
    }
}
