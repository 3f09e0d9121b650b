//! Channels and their subscribers: subscribe and unsubscribe, the interest the event source
//! hears of (a channel's first subscriber, its last one leaving), and whether the source
//! delivers a channel yet (*live*).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::client::Client;
use super::seam::Seam;
use super::{ClientId, Hub, SourceLink};
use crate::event_id::EventId;
use crate::lock::lock;
use crate::protocol::{ChannelName, RequestError, MAX_CHANNELS_PER_CONNECTION};

/// One channel with at least one local subscriber.
pub(super) struct Channel {
    pub inner: Mutex<ChannelInner>,
    /// Slow consumers of this channel are conflated rather than closed.
    pub conflate: bool,
    /// The source delivers this channel's events (Redis confirmed the SUBSCRIBE); a resume
    /// reads history only once this holds, so nothing published meanwhile is missed.
    pub live: AtomicBool,
}

/// A channel's state, under its lock (the third of the hub's lock order).
#[derive(Default)]
pub(super) struct ChannelInner {
    /// The id of the channel's newest event.
    pub last_id: EventId,
    /// Where the channel's history stood when its subscription went live is known (see
    /// [`Hub::seed_position`]), so a catch-up can start at `last_id` even before an event came.
    pub position_known: bool,
    /// The newest history id fanned out (or held to be) from the source or a catch-up: a live
    /// event at or below it is a duplicate, e.g. one a cluster primary the channel moved away
    /// from delivers late, after the catch-up on the new primary already handed it over.
    pub delivered_id: EventId,
    pub subscribers: Vec<Arc<Client>>,
    /// Subscriptions replaying history; they get live events only through their seam.
    pub recovering: Vec<Recovering>,
    /// Set while the whole channel catches up on what the source missed during a reconnect:
    /// its live events are held here until history up to them has been fanned out.
    pub catch_up: Option<Seam>,
}

/// A subscription replaying history, and the live events held for it meanwhile.
pub(super) struct Recovering {
    pub client: Arc<Client>,
    pub seam: Seam,
}

impl Hub {
    /// Subscribes a connection to the channels it does not hold yet; those also in `resume`
    /// start recovering (see [`Hub::finish_recovery`]). Returns the channels that started
    /// recovering.
    pub fn subscribe(
        &self,
        client: &Arc<Client>,
        channels: &[ChannelName],
        resume: &[ChannelName],
    ) -> Result<Vec<ChannelName>, RequestError> {
        let mut guard = lock(&client.channels);
        if guard.closed {
            return Ok(Vec::new());
        }
        let mine = &mut guard.list;
        let new: Vec<&ChannelName> = channels.iter().filter(|c| !mine.contains(c)).collect();
        if mine.len() + new.len() > MAX_CHANNELS_PER_CONNECTION {
            return Err(RequestError::TooManyChannels { max: MAX_CHANNELS_PER_CONNECTION });
        }
        let mut recovering = Vec::new();
        for channel in new {
            // The dashmap entry guard is held while the subscriber is added, so a concurrent
            // removal of the emptied channel cannot orphan this subscription.
            let entry = self.channels.entry(channel.clone()).or_insert_with(|| {
                self.metrics.channels.inc();
                Arc::new(Channel {
                    inner: Mutex::new(ChannelInner::default()),
                    conflate: self.policies.conflates(channel),
                    live: AtomicBool::new(matches!(self.source, SourceLink::Embedded)),
                })
            });
            let first = {
                let mut inner = lock(&entry.inner);
                let first = inner.subscribers.is_empty() && inner.recovering.is_empty();
                if resume.contains(channel) {
                    inner.recovering.push(Recovering { client: Arc::clone(client), seam: Seam::default() });
                    recovering.push(channel.clone());
                } else {
                    inner.subscribers.push(Arc::clone(client));
                }
                first
            };
            drop(entry);
            mine.push(channel.clone());
            if first {
                self.interest_changed(channel);
            }
        }
        Ok(recovering)
    }

    /// Unsubscribes a connection from the channels it listens to among those given.
    pub fn unsubscribe(&self, client: &Arc<Client>, channels: &[ChannelName]) {
        let mut guard = lock(&client.channels);
        let mine = &mut guard.list;
        for channel in channels {
            if let Some(at) = mine.iter().position(|c| c == channel) {
                mine.swap_remove(at);
                self.remove_subscriber(channel, client.id);
            }
        }
    }

    pub(super) fn remove_subscriber(&self, channel: &ChannelName, id: ClientId) {
        let mut now_empty = false;
        let removed = self.channels.remove_if(channel, |_, ch| {
            let mut inner = lock(&ch.inner);
            if let Some(at) = inner.subscribers.iter().position(|s| s.id == id) {
                inner.subscribers.swap_remove(at);
            } else if let Some(at) = inner.recovering.iter().position(|r| r.client.id == id) {
                let recovering = inner.recovering.swap_remove(at);
                recovering.client.outbound.release_held(recovering.seam.bytes());
            }
            now_empty = inner.subscribers.is_empty() && inner.recovering.is_empty();
            now_empty
        });
        if removed.is_some() {
            self.metrics.channels.dec();
        }
        if now_empty {
            self.interest_changed(channel);
        }
    }

    fn interest_changed(&self, channel: &ChannelName) {
        if let SourceLink::OnDemand { interest } = &self.source {
            // The receiver lives as long as the source; after it is gone nobody needs to know.
            let _ = interest.send(channel.clone());
        }
    }

    /// Closes every connection that listens to `channel` (live or resuming) with `close`;
    /// returns how many this call closed.
    pub fn close_subscribers(&self, channel: &ChannelName, close: crate::close::Close) -> usize {
        let Some(channel_state) = self.channel(channel) else { return 0 };
        let inner = lock(&channel_state.inner);
        let live = inner.subscribers.iter();
        let resuming = inner.recovering.iter().map(|r| &r.client);
        live.chain(resuming).filter(|client| client.outbound.close(close)).count()
    }

    /// True while at least one local connection listens to `channel`.
    pub fn has_subscribers(&self, channel: &ChannelName) -> bool {
        self.channels.contains_key(channel)
    }

    /// Every channel with local subscribers (resubscribed after a source reconnect).
    pub fn channel_names(&self) -> Vec<ChannelName> {
        self.channels.iter().map(|entry| entry.key().clone()).collect()
    }

    /// Marks channels live: the source now delivers their events (Redis SUBSCRIBE confirmed).
    pub fn mark_live(&self, channels: &[ChannelName]) {
        for channel in channels {
            if let Some(entry) = self.channels.get(channel) {
                entry.live.store(true, Ordering::Release);
            }
        }
        self.live_changed.notify_waiters();
    }

    /// Marks channels not live (their subscription is being re-made on another server).
    pub fn mark_not_live(&self, channels: &[ChannelName]) {
        for channel in channels {
            if let Some(entry) = self.channels.get(channel) {
                entry.live.store(false, Ordering::Release);
            }
        }
    }

    /// Marks every channel not live (the source lost its subscriptions).
    pub fn mark_all_not_live(&self) {
        for entry in self.channels.iter() {
            entry.live.store(false, Ordering::Release);
        }
    }

    /// Resolves once `channel` is live or after `timeout` (the caller checks again).
    pub async fn wait_live(&self, channel: &ChannelName, timeout: std::time::Duration) -> bool {
        let notified = self.live_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_live(channel) {
            return true;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.is_live(channel)
    }

    fn is_live(&self, channel: &ChannelName) -> bool {
        self.channels.get(channel).is_some_and(|entry| entry.live.load(Ordering::Acquire))
    }
}
