//! The hub's side of a history replay: a resuming subscription ([`Hub::finish_recovery`]) and a
//! channel catching up after its source reconnected ([`Hub::begin_catch_up`] …
//! [`Hub::finish_catch_up`]). Both end at a [`super::seam::Seam`] under the channel's lock, so
//! nothing can be published between the last replayed event and live delivery. The replays
//! themselves (reading history, pacing) are `crate::recovery`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::client::Client;
use super::seam::Seam;
use super::{ClientId, Hub};
use crate::event_id::EventId;
use crate::lock::lock;
use crate::outbound::Event;
use crate::protocol::ChannelName;

/// How a replay's end at the seam went.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// Live; this many held events were handed over after the replay.
    Live { handed_over: u64 },
    /// Too many live events arrived during the replay; read history on from where it stopped.
    ReadMore,
    /// The subscription (or the channel) is gone.
    Gone,
}

impl Hub {
    /// Ends a recovery whose replay reached `replayed_to`: under the channel's lock, queues the
    /// live events kept meanwhile that are newer, then `notice(handed_over)`, and makes the
    /// subscription live. Nothing can be published between the two, so the seam has no gap.
    /// When the replay is ahead of live delivery (history already holds events whose live
    /// message is still on its way), the subscription stays aside until the first live event
    /// newer than the replay, so none of those comes twice.
    pub fn finish_recovery(
        &self,
        client: &Arc<Client>,
        channel: &ChannelName,
        replayed_to: EventId,
        notice: impl FnOnce(u64) -> Bytes,
    ) -> Finish {
        let Some(channel_state) = self.channel(channel) else { return Finish::Gone };
        let inner = &mut *lock(&channel_state.inner);
        let Some(at) = inner.recovering.iter().position(|r| r.client.id == client.id) else {
            return Finish::Gone;
        };
        let Some(end) = inner.recovering[at].seam.finish(replayed_to) else { return Finish::ReadMore };
        client.outbound.release_held(end.released);
        for (_, event) in &end.hand_over {
            self.push(client, event);
        }
        let handed_over = end.hand_over.len() as u64;
        client.outbound.push(&Event::control(notice(handed_over)));
        if end.live {
            let recovering = inner.recovering.swap_remove(at);
            inner.subscribers.push(recovering.client);
        }
        Finish::Live { handed_over }
    }

    /// True while `client` has a resume of `channel` under way (not unsubscribed, not done).
    pub fn is_recovering(&self, client: ClientId, channel: &ChannelName) -> bool {
        let Some(channel_state) = self.channel(channel) else { return false };
        let inner = lock(&channel_state.inner);
        inner.recovering.iter().any(|r| r.client.id == client)
    }

    /// Starts a catch-up of `channel` after its source reconnected: from now on its live events
    /// are held back. Returns the id to read history after (the newest this hub has seen), or
    /// `None` when there is nothing to catch up (no history kept, nothing seen yet, or a
    /// catch-up already under way).
    pub fn begin_catch_up(&self, channel: &ChannelName) -> Option<EventId> {
        if !self.policies.keeps_history(channel) {
            return None;
        }
        let channel_state = self.channel(channel)?;
        let mut inner = lock(&channel_state.inner);
        if inner.catch_up.is_some() || (inner.last_id == EventId::default() && !inner.position_known) {
            return None;
        }
        inner.catch_up = Some(Seam::default());
        Some(inner.last_id)
    }

    /// Records where `channel`'s history stood when its subscription went live (`None`: it had
    /// no history then, so everything after is new): a later catch-up (after a reconnect or a
    /// lag) starts there even if no event has arrived yet, so events lost before the first one
    /// are caught up too.
    pub fn seed_position(&self, channel: &ChannelName, history_last_id: Option<EventId>) {
        let Some(channel_state) = self.channel(channel) else { return };
        let mut inner = lock(&channel_state.inner);
        if let Some(id) = history_last_id {
            inner.last_id = inner.last_id.max(id);
        }
        inner.position_known = true;
    }

    /// Fans out one event read from history during a catch-up.
    pub fn fan_out_caught_up(&self, channel: &ChannelName, id: EventId, payload: &[u8]) {
        let Some(channel_state) = self.channel(channel) else { return };
        let inner = &mut *lock(&channel_state.inner);
        inner.last_id = inner.last_id.max(id);
        inner.delivered_id = inner.delivered_id.max(id);
        let event = self.event(channel, &channel_state, id, payload, Instant::now());
        self.fan_out(inner, Some(id), &event);
    }

    /// Ends a catch-up whose replay reached `replayed_to`, under the channel's lock: the held
    /// live events newer than the replay are fanned out and the channel is live again, or, if
    /// history is ahead of live delivery, live events up to `replayed_to` will be skipped.
    pub fn finish_catch_up(&self, channel: &ChannelName, replayed_to: EventId) -> Finish {
        let Some(channel_state) = self.channel(channel) else { return Finish::Gone };
        let inner = &mut *lock(&channel_state.inner);
        let Some(seam) = &mut inner.catch_up else { return Finish::Gone };
        let Some(end) = seam.finish(replayed_to) else { return Finish::ReadMore };
        if end.live {
            inner.catch_up = None;
        }
        for (id, event) in &end.hand_over {
            self.fan_out(inner, *id, event);
        }
        Finish::Live { handed_over: end.hand_over.len() as u64 }
    }

    /// Abandons a catch-up that could not finish; held events go out as they are.
    pub fn abandon_catch_up(&self, channel: &ChannelName) {
        let Some(channel_state) = self.channel(channel) else { return };
        let inner = &mut *lock(&channel_state.inner);
        if let Some(seam) = inner.catch_up.take() {
            for (id, event) in &seam.into_held() {
                self.fan_out(inner, *id, event);
            }
        }
    }
}
