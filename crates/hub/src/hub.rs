//! The hub: who is connected, who listens to which channel, and the fan-out of events.
//!
//! The registry is a dashmap of channels; each channel has its own small lock, so publishing
//! on one channel never waits for another and there is no global lock on the publish path.
//! An event is framed once, under its channel's lock (which also fixes its `id` and so the
//! per-channel order), and the same bytes are pushed to every subscriber's queue.
//!
//! The hub also owns connection admission (the connection cap) and tells the event source,
//! through an interest channel, when a channel gains its first or loses its last subscriber.
//!
//! A subscription that resumes from an id starts *recovering*: it is held beside the channel's
//! live subscribers and the channel's live events are kept for it (bounded) while
//! `crate::recovery` replays history; [`Hub::finish_recovery`] then, under the channel's lock,
//! hands over the kept events newer than the replay and makes the subscription live, so no
//! event falls between history and live, and none comes twice. A whole channel does the same
//! after its source reconnects ([`Hub::begin_catch_up`]): its live events wait while what was
//! missed is fanned out from history.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::event_id::{self, EventId};
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::outbound::{Close, Event, Outbound, Push};
use crate::policy::ChannelPolicies;
use crate::protocol::{self, ChannelName, RequestError, MAX_CHANNELS_PER_CONNECTION};
use mt_budget::Budget;

/// Identifies a connection for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// One connection as the hub sees it.
pub struct Session {
    pub id: SessionId,
    /// Frames waiting for this connection's writer.
    pub outbound: Outbound,
    started: Instant,
    /// Nanoseconds after `started` when the peer last sent anything (reader writes, writer reads).
    last_seen_ns: AtomicU64,
    /// Channels this connection listens to; changed by its reader, emptied at clean-up.
    channels: Mutex<SessionChannels>,
}

#[derive(Default)]
struct SessionChannels {
    list: Vec<ChannelName>,
    /// Set by [`Hub::close_session`]: a subscribe that races with clean-up (a reader not yet
    /// stopped) must not re-register a finished connection.
    closed: bool,
}

impl Session {
    /// Records that the peer sent something (any frame counts as alive).
    pub fn touch(&self) {
        self.last_seen_ns.store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// When the peer last sent anything.
    pub fn last_seen(&self) -> Instant {
        self.started + std::time::Duration::from_nanos(self.last_seen_ns.load(Ordering::Relaxed))
    }

    /// The channels this connection listens to.
    pub fn channels(&self) -> Vec<ChannelName> {
        lock(&self.channels).list.clone()
    }
}

struct Channel {
    inner: Mutex<ChannelInner>,
    /// Slow consumers of this channel are conflated rather than closed.
    conflate: bool,
    /// The source delivers this channel's events (Redis confirmed the SUBSCRIBE); a resume
    /// reads history only once this holds, so nothing published meanwhile is missed.
    live: AtomicBool,
}

#[derive(Default)]
struct ChannelInner {
    /// The id of the channel's newest event.
    last_id: EventId,
    subscribers: Vec<Arc<Session>>,
    /// Subscriptions replaying history; they get live events only through their buffer.
    recovering: Vec<Recovering>,
    /// Set while the whole channel catches up on what the source missed during a reconnect:
    /// its live events are held here until history up to them has been fanned out.
    catch_up: Option<Seam>,
}

/// Most live bytes a catching-up channel holds back before it reads history further instead.
const CATCH_UP_BUFFER: usize = 4 << 20;

/// A subscription replaying history, and the live events held for it meanwhile.
struct Recovering {
    session: Arc<Session>,
    seam: Seam,
}

/// The seam between a history replay and live delivery, for one subscription (resume) or a
/// whole channel (catch-up): live events are held while history is replayed, then those newer
/// than the replay are handed over. History can also be *ahead* of live delivery (an event in
/// the stream whose live message has not reached this hub yet); then live events up to the
/// replay's last id are skipped until the first newer one.
#[derive(Default)]
struct Seam {
    /// Live events held back, with their history id (`None`: never in history).
    held: Vec<(Option<EventId>, Arc<Event>)>,
    bytes: usize,
    /// More was held than allowed and all of it dropped: history has it, read further.
    overflowed: bool,
    /// The replay ended ahead of live delivery at this id.
    live_after: Option<EventId>,
}

/// What a live event means to a [`Seam`].
#[derive(Debug, PartialEq, Eq)]
enum LiveEvent {
    /// The replay is still running: hold it.
    Hold,
    /// Replayed already: drop it.
    Skip,
    /// Past the replay: deliver it, and from now on everything.
    GoLive,
}

/// How a replay ends at a [`Seam`].
struct SeamEnd {
    /// Held events newer than the replay, in order, to deliver now.
    hand_over: Vec<(Option<EventId>, Arc<Event>)>,
    /// Whether later live events need no check (else the seam waits with `live_after`).
    live: bool,
}

impl Seam {
    fn on_live(&self, id: Option<EventId>) -> LiveEvent {
        match self.live_after {
            None => LiveEvent::Hold,
            Some(after) if id.is_some_and(|id| id <= after) => LiveEvent::Skip,
            Some(_) => LiveEvent::GoLive,
        }
    }

    /// Holds a live event; past `cap` bytes everything held is dropped (history has it).
    fn hold(&mut self, id: Option<EventId>, event: &Arc<Event>, cap: usize) {
        if self.overflowed {
            return;
        }
        self.bytes += event.frame.len();
        if self.bytes > cap {
            *self = Seam { overflowed: true, ..Seam::default() };
        } else {
            self.held.push((id, Arc::clone(event)));
        }
    }

    /// Ends a replay that reached `replayed_to`; `None` when held events were dropped and
    /// history must be read further first.
    fn finish(&mut self, replayed_to: EventId) -> Option<SeamEnd> {
        if std::mem::take(&mut self.overflowed) {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        self.bytes = 0;
        let newest_held = held.iter().filter_map(|(id, _)| *id).max();
        // Events without a history id were never in history: they go out as they came.
        let hand_over: Vec<_> = held.into_iter().filter(|(id, _)| id.is_none_or(|id| id > replayed_to)).collect();
        let live = newest_held.is_some_and(|newest| newest >= replayed_to);
        if !live {
            self.live_after = Some(replayed_to);
        }
        Some(SeamEnd { hand_over, live })
    }
}

/// How [`Hub::finish_recovery`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// The subscription is live; this many buffered events were handed over after the replay.
    Live { handed_over: u64 },
    /// Too many live events arrived during the replay; read history on from where it stopped.
    ReadMore,
    /// The subscription is gone (unsubscribed or the connection closed).
    Gone,
}

/// A held connection slot; dropping it frees the slot.
pub struct Admission {
    hub: Arc<Hub>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.connections.dec();
    }
}

/// The registry and fan-out.
pub struct Hub {
    channels: DashMap<ChannelName, Arc<Channel>>,
    sessions: DashMap<SessionId, Arc<Session>>,
    connections: AtomicUsize,
    next_session: AtomicU64,
    draining: AtomicBool,
    budget: Budget,
    /// Channels whose first subscriber arrived or last one left; read by the event source.
    interest: Option<mpsc::UnboundedSender<ChannelName>>,
    policies: ChannelPolicies,
    /// Woken when a channel becomes live (see [`Channel::live`]).
    live_changed: Notify,
    pub metrics: Metrics,
}

impl Hub {
    /// A hub; `interest` receives channel names whose local interest changed (Redis source),
    /// and with it channels are live only once the source says so ([`Hub::mark_live`]).
    pub fn new(
        budget: Budget,
        metrics: Metrics,
        interest: Option<mpsc::UnboundedSender<ChannelName>>,
        policies: ChannelPolicies,
    ) -> Self {
        Self {
            channels: DashMap::new(),
            sessions: DashMap::new(),
            connections: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            budget,
            interest,
            policies,
            live_changed: Notify::new(),
            metrics,
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn policies(&self) -> &ChannelPolicies {
        &self.policies
    }

    /// A channel's state, without holding the registry's shard lock.
    fn channel(&self, channel: &ChannelName) -> Option<Arc<Channel>> {
        self.channels.get(channel).map(|entry| Arc::clone(entry.value()))
    }

    /// Takes a connection slot, or `None` at the cap.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.budget.max_connections.get();
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        self.metrics.connections.inc();
        Some(Admission { hub: Arc::clone(self) })
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// True once shutdown began: readiness fails and upgrades are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Registers a new connection.
    pub fn open_session(&self) -> Arc<Session> {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        let session = Arc::new(Session {
            id,
            outbound: Outbound::new(
                self.budget.queue_cap_per_connection().bytes() as usize,
                self.metrics.queued_bytes.clone(),
            ),
            started: Instant::now(),
            last_seen_ns: AtomicU64::new(0),
            channels: Mutex::new(SessionChannels::default()),
        });
        self.sessions.insert(id, Arc::clone(&session));
        session
    }

    /// Removes a finished connection from every channel and from the registry.
    pub fn close_session(&self, session: &Arc<Session>) {
        let channels = {
            let mut mine = lock(&session.channels);
            mine.closed = true;
            std::mem::take(&mut mine.list)
        };
        for channel in &channels {
            self.remove_subscriber(channel, session.id);
        }
        self.sessions.remove(&session.id);
    }

    /// Every open connection (for the shutdown drain).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.iter().map(|entry| Arc::clone(entry.value())).collect()
    }

    /// Subscribes a connection to the channels it does not hold yet; those also in `resume`
    /// start recovering (see [`Hub::finish_recovery`]). Returns the channels that started
    /// recovering.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        channels: &[ChannelName],
        resume: &[ChannelName],
    ) -> Result<Vec<ChannelName>, RequestError> {
        let mut guard = lock(&session.channels);
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
                    live: AtomicBool::new(self.interest.is_none()),
                })
            });
            let first = {
                let mut inner = lock(&entry.inner);
                let first = inner.subscribers.is_empty() && inner.recovering.is_empty();
                if resume.contains(channel) {
                    inner.recovering.push(Recovering { session: Arc::clone(session), seam: Seam::default() });
                    recovering.push(channel.clone());
                } else {
                    inner.subscribers.push(Arc::clone(session));
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

    /// Ends a recovery whose replay reached `replayed_to`: under the channel's lock, queues the
    /// live events kept meanwhile that are newer, then `notice(handed_over)`, and makes the
    /// subscription live. Nothing can be published between the two, so the seam has no gap.
    /// When the replay is ahead of live delivery (history already holds events whose live
    /// message is still on its way), the subscription stays aside until the first live event
    /// newer than the replay, so none of those comes twice.
    pub fn finish_recovery(
        &self,
        session: &Arc<Session>,
        channel: &ChannelName,
        replayed_to: EventId,
        notice: impl FnOnce(u64) -> Bytes,
    ) -> Finish {
        let Some(channel_state) = self.channel(channel) else { return Finish::Gone };
        let inner = &mut *lock(&channel_state.inner);
        let Some(at) = inner.recovering.iter().position(|r| r.session.id == session.id) else {
            return Finish::Gone;
        };
        let Some(end) = inner.recovering[at].seam.finish(replayed_to) else { return Finish::ReadMore };
        for (_, event) in &end.hand_over {
            self.push(session, event);
        }
        let handed_over = end.hand_over.len() as u64;
        session.outbound.push(&Event::control(notice(handed_over)));
        if end.live {
            let recovering = inner.recovering.swap_remove(at);
            inner.subscribers.push(recovering.session);
        }
        Finish::Live { handed_over }
    }

    /// True while `session` has a resume of `channel` under way (not unsubscribed, not done).
    pub fn is_recovering(&self, session: SessionId, channel: &ChannelName) -> bool {
        let Some(channel_state) = self.channel(channel) else { return false };
        let inner = lock(&channel_state.inner);
        inner.recovering.iter().any(|r| r.session.id == session)
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

    /// Unsubscribes a connection from the channels it listens to among those given.
    pub fn unsubscribe(&self, session: &Arc<Session>, channels: &[ChannelName]) {
        let mut guard = lock(&session.channels);
        let mine = &mut guard.list;
        for channel in channels {
            if let Some(at) = mine.iter().position(|c| c == channel) {
                mine.swap_remove(at);
                self.remove_subscriber(channel, session.id);
            }
        }
    }

    fn remove_subscriber(&self, channel: &ChannelName, id: SessionId) {
        let mut now_empty = false;
        let removed = self.channels.remove_if(channel, |_, ch| {
            let mut inner = lock(&ch.inner);
            if let Some(at) = inner.subscribers.iter().position(|s| s.id == id) {
                inner.subscribers.swap_remove(at);
            } else if let Some(at) = inner.recovering.iter().position(|r| r.session.id == id) {
                inner.recovering.swap_remove(at);
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
        if let Some(interest) = &self.interest {
            // The receiver lives as long as the source; after it is gone nobody needs to know.
            let _ = interest.send(channel.clone());
        }
    }

    /// True while at least one local connection listens to `channel`.
    pub fn has_subscribers(&self, channel: &ChannelName) -> bool {
        self.channels.contains_key(channel)
    }

    /// Every channel with local subscribers (resubscribed after a source reconnect).
    pub fn channel_names(&self) -> Vec<ChannelName> {
        self.channels.iter().map(|entry| entry.key().clone()).collect()
    }

    /// Fans an event out to the channel's subscribers; returns how many queues took it. `id` is
    /// the event's history id; without one (a channel without history, or a plain Redis
    /// PUBLISH) the hub makes one up that follows the channel's last.
    pub fn publish(&self, channel: &ChannelName, id: Option<EventId>, payload: &[u8], received_at: Instant) -> usize {
        self.metrics.messages_received.inc();
        let Some(channel_state) = self.channel(channel) else { return 0 };
        let inner = &mut *lock(&channel_state.inner);
        let mut held_back = false;
        if let Some(seam) = &inner.catch_up {
            match seam.on_live(id) {
                LiveEvent::Hold => held_back = true,
                LiveEvent::Skip => return 0,
                LiveEvent::GoLive => inner.catch_up = None,
            }
        }
        let assigned = id.unwrap_or_else(|| EventId::next_after(inner.last_id, event_id::now_ms()));
        inner.last_id = inner.last_id.max(assigned);
        let event = self.event(channel, &channel_state, assigned, payload, received_at);
        match &mut inner.catch_up {
            Some(seam) if held_back => {
                seam.hold(id, &event, CATCH_UP_BUFFER);
                0
            }
            _ => self.fan_out(inner, id, &event),
        }
    }

    /// The shared, framed event.
    fn event(
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
    fn fan_out(&self, inner: &mut ChannelInner, id: Option<EventId>, event: &Arc<Event>) -> usize {
        let mut queued = 0;
        for session in &inner.subscribers {
            queued += self.push(session, event) as usize;
        }
        let mut went_live = Vec::new();
        for (at, recovering) in inner.recovering.iter_mut().enumerate() {
            match recovering.seam.on_live(id) {
                LiveEvent::Hold => recovering.seam.hold(id, event, recovering.session.outbound.cap()),
                LiveEvent::Skip => {}
                LiveEvent::GoLive => {
                    queued += self.push(&recovering.session, event) as usize;
                    went_live.push(at);
                }
            }
        }
        for at in went_live.into_iter().rev() {
            let recovering = inner.recovering.swap_remove(at);
            inner.subscribers.push(recovering.session);
        }
        queued
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
        if inner.catch_up.is_some() || inner.last_id == EventId::default() {
            return None;
        }
        inner.catch_up = Some(Seam::default());
        Some(inner.last_id)
    }

    /// Fans out one event read from history during a catch-up.
    pub fn fan_out_caught_up(&self, channel: &ChannelName, id: EventId, payload: &[u8]) {
        let Some(channel_state) = self.channel(channel) else { return };
        let inner = &mut *lock(&channel_state.inner);
        inner.last_id = inner.last_id.max(id);
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
            for (id, event) in &seam.held {
                self.fan_out(inner, *id, event);
            }
        }
    }

    /// Queues an event for one connection; returns whether it was queued.
    fn push(&self, session: &Session, event: &Arc<Event>) -> bool {
        match session.outbound.push(event) {
            Push::Queued => true,
            Push::Conflated => {
                self.metrics.conflations.inc();
                true
            }
            Push::Overflowed => {
                self.metrics.slow_consumer_disconnects.inc();
                tracing::info!(session = session.id.0, "slow consumer: closing with 4008");
                false
            }
            Push::Closed => false,
        }
    }

    /// Asks every connection to close with `close` (used by the drain).
    pub fn close_all_now(&self, close: Close) {
        for session in self.sessions() {
            session.outbound.close(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn hub() -> (Arc<Hub>, mpsc::UnboundedReceiver<ChannelName>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&mut Registry::default());
        (Arc::new(Hub::new(Budget::default(), metrics, Some(tx), ChannelPolicies::default())), rx)
    }

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    fn drained_ids(session: &Session) -> Vec<String> {
        let mut batch = Vec::new();
        session.outbound.drain_into(&mut batch);
        batch
            .iter()
            .map(|e| {
                let (frame, _) = mt_testkit::parse_server_frame(&e.frame).unwrap().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// One event reaches every subscriber as the same shared bytes, with increasing ids.
    #[test]
    fn fan_out_shares_one_encoding() {
        let (hub, _) = hub();
        let a = hub.open_session();
        let b = hub.open_session();
        hub.subscribe(&a, &[name("x")], &[]).unwrap();
        hub.subscribe(&b, &[name("x")], &[]).unwrap();
        assert_eq!(hub.publish(&name("x"), None, b"1", Instant::now()), 2);
        assert_eq!(hub.publish(&name("y"), None, b"1", Instant::now()), 0);
        hub.publish(&name("x"), None, b"2", Instant::now());
        let (mut qa, mut qb) = (Vec::new(), Vec::new());
        a.outbound.drain_into(&mut qa);
        b.outbound.drain_into(&mut qb);
        assert!(Arc::ptr_eq(&qa[0], &qb[0]), "the same event object is shared");
        assert_eq!(qa.len(), 2);
        hub.publish(&name("x"), Some(EventId::new(5, 0)), b"3", Instant::now());
        hub.publish(&name("x"), None, b"4", Instant::now());
        let ids: Vec<EventId> = drained_ids(&a).iter().map(|id| id.parse().unwrap()).collect();
        assert_eq!(ids[0], EventId::new(5, 0), "a history id is kept as given");
        assert!(ids[1] > ids[0], "a made-up id follows the channel's last");
    }

    /// A recovering subscription gets no live events directly; finishing hands over those newer
    /// than the replay, then the notice, then it is live. An overflowing buffer asks for more.
    #[test]
    fn recovery_seam_has_no_gap_and_no_duplicate() {
        let (hub, _) = hub();
        let a = hub.open_session();
        let recovering = hub.subscribe(&a, &[name("x")], &[name("x")]).unwrap();
        assert_eq!(recovering, [name("x")]);
        assert!(hub.has_subscribers(&name("x")), "a recovering subscription keeps the channel wanted");
        for ms in 1..=3 {
            hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
        }
        assert!(drained_ids(&a).is_empty(), "nothing live while recovering");
        // The replay already wrote up to 2-0: only 3-0 is handed over, then the notice.
        let finish = hub.finish_recovery(&a, &name("x"), EventId::new(2, 0), |n| {
            protocol::encode_recovered(&name("x"), EventId::new(0, 0), n, Ok(()))
        });
        assert_eq!(finish, Finish::Live { handed_over: 1 });
        let mut batch = Vec::new();
        a.outbound.drain_into(&mut batch);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].delivery_id().unwrap().1, EventId::new(3, 0));
        assert!(!batch[1].is_delivery(), "the notice follows the handed-over events");
        hub.publish(&name("x"), Some(EventId::new(4, 0)), b"1", Instant::now());
        assert_eq!(drained_ids(&a), ["4-0"], "live after the seam");
        assert_eq!(hub.finish_recovery(&a, &name("x"), EventId::new(4, 0), |_| Bytes::new()), Finish::Gone);

        // The replay got ahead of live delivery (history had 6-0 and 7-0 before their live
        // messages came): those are skipped when they arrive live, 8-0 goes through.
        let c = hub.open_session();
        hub.subscribe(&c, &[name("x")], &[name("x")]).unwrap();
        assert_eq!(
            hub.finish_recovery(&c, &name("x"), EventId::new(7, 0), |_| Bytes::from_static(b"notice")),
            Finish::Live { handed_over: 0 }
        );
        for ms in 5..=8 {
            hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
        }
        let mut batch = Vec::new();
        c.outbound.drain_into(&mut batch);
        let delivered: Vec<EventId> = batch.iter().filter_map(|e| e.delivery_id()).map(|(_, id)| id).collect();
        assert_eq!(delivered, [EventId::new(8, 0)]);
        assert_eq!(batch.len(), 2, "the notice, then 8-0");
        hub.publish(&name("x"), Some(EventId::new(9, 0)), b"1", Instant::now());
        assert_eq!(drained_ids(&c), ["9-0"], "live from then on");

        let b = hub.open_session();
        hub.subscribe(&b, &[name("y")], &[name("y")]).unwrap();
        let big = vec![b'x'; b.outbound.cap() / 3];
        for ms in 1..=4 {
            hub.publish(&name("y"), Some(EventId::new(ms, 0)), &big, Instant::now());
        }
        assert_eq!(hub.finish_recovery(&b, &name("y"), EventId::new(0, 0), |_| Bytes::new()), Finish::ReadMore);
        assert_eq!(
            hub.finish_recovery(&b, &name("y"), EventId::new(4, 0), |_| Bytes::new()),
            Finish::Live { handed_over: 0 }
        );
        hub.unsubscribe(&b, &[name("y")]);
        assert!(!hub.has_subscribers(&name("y")));
    }

    /// A channel catching up holds live events back, fans out history first, then hands over
    /// the held events newer than the replay; a replay ahead of live skips the live copies.
    #[test]
    fn catch_up_keeps_order_without_duplicates() {
        let (hub, _) = hub();
        let a = hub.open_session();
        hub.subscribe(&a, &[name("x")], &[]).unwrap();
        hub.publish(&name("x"), Some(EventId::new(1, 0)), b"1", Instant::now());
        assert_eq!(drained_ids(&a), ["1-0"]);
        assert_eq!(hub.begin_catch_up(&name("x")), Some(EventId::new(1, 0)));
        assert_eq!(hub.begin_catch_up(&name("x")), None, "one catch-up at a time");
        hub.publish(&name("x"), Some(EventId::new(4, 0)), b"1", Instant::now());
        assert!(drained_ids(&a).is_empty(), "live events wait during the catch-up");
        for ms in 2..=3 {
            hub.fan_out_caught_up(&name("x"), EventId::new(ms, 0), b"1");
        }
        assert_eq!(hub.finish_catch_up(&name("x"), EventId::new(3, 0)), Finish::Live { handed_over: 1 });
        assert_eq!(drained_ids(&a), ["2-0", "3-0", "4-0"]);

        // History ahead of live: 5-0 and 6-0 came from history before their live copies.
        hub.begin_catch_up(&name("x")).unwrap();
        for ms in 5..=6 {
            hub.fan_out_caught_up(&name("x"), EventId::new(ms, 0), b"1");
        }
        assert_eq!(hub.finish_catch_up(&name("x"), EventId::new(6, 0)), Finish::Live { handed_over: 0 });
        for ms in 5..=7 {
            hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
        }
        assert_eq!(drained_ids(&a), ["5-0", "6-0", "7-0"]);
    }

    /// The source hears of a channel's first subscriber and of its last one leaving.
    #[test]
    fn interest_follows_first_and_last_subscriber() {
        let (hub, mut interest) = hub();
        let a = hub.open_session();
        let b = hub.open_session();
        hub.subscribe(&a, &[name("x")], &[]).unwrap();
        hub.subscribe(&b, &[name("x")], &[]).unwrap();
        assert_eq!(interest.try_recv().unwrap(), name("x"));
        assert!(interest.try_recv().is_err(), "second subscriber is no news");
        hub.unsubscribe(&a, &[name("x")]);
        assert!(interest.try_recv().is_err());
        assert!(hub.has_subscribers(&name("x")));
        hub.close_session(&b);
        assert_eq!(interest.try_recv().unwrap(), name("x"));
        assert!(!hub.has_subscribers(&name("x")));
        assert!(hub.channel_names().is_empty());
    }

    /// The connection cap admits exactly max connections and frees slots on drop.
    #[test]
    fn admission_respects_the_cap() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let budget = Budget { max_connections: std::num::NonZeroUsize::new(2).unwrap(), ..Budget::default() };
        let hub =
            Arc::new(Hub::new(budget, Metrics::new(&mut Registry::default()), Some(tx), ChannelPolicies::default()));
        let first = hub.try_admit().expect("slot 1");
        let _second = hub.try_admit().expect("slot 2");
        assert!(hub.try_admit().is_none());
        drop(first);
        assert!(hub.try_admit().is_some());
    }

    /// A connection may not hold more than the per-connection channel limit.
    #[test]
    fn channel_limit_per_connection() {
        let (hub, _) = hub();
        let a = hub.open_session();
        let many: Vec<ChannelName> = (0..MAX_CHANNELS_PER_CONNECTION + 1).map(|i| name(&format!("c{i}"))).collect();
        assert!(hub.subscribe(&a, &many, &[]).is_err());
        assert!(a.channels().is_empty(), "nothing subscribed on refusal");
        hub.subscribe(&a, &many[..MAX_CHANNELS_PER_CONNECTION], &[]).unwrap();
        assert_eq!(a.channels().len(), MAX_CHANNELS_PER_CONNECTION);
    }

    /// A subscribe that arrives after clean-up does not bring a finished connection back.
    #[test]
    fn no_subscribe_after_close() {
        let (hub, _) = hub();
        let a = hub.open_session();
        hub.close_session(&a);
        hub.subscribe(&a, &[name("x")], &[]).unwrap();
        assert!(!hub.has_subscribers(&name("x")));
        assert!(a.channels().is_empty());
    }
}
