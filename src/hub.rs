//! The hub: who is connected, who listens to which channel, and the fan-out of events.
//!
//! The registry is a dashmap of channels; each channel has its own small lock, so publishing
//! on one channel never waits for another and there is no global lock on the publish path.
//! An event is framed once, under its channel's lock (which also fixes its `id` and so the
//! per-channel order), and the same bytes are pushed to every subscriber's queue.
//!
//! The hub also owns connection admission (the connection cap) and tells the event source,
//! through an interest channel, when a channel gains its first or loses its last subscriber.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::budget::Budget;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::outbound::{Close, Event, Outbound, Push};
use crate::protocol::{self, ChannelName, RequestError, MAX_CHANNELS_PER_CONNECTION};

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
}

#[derive(Default)]
struct ChannelInner {
    /// The last id given to an event of this channel.
    last_id: u64,
    subscribers: Vec<Arc<Session>>,
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
    pub metrics: Metrics,
}

impl Hub {
    /// A hub; `interest` receives channel names whose local interest changed (Redis source).
    pub fn new(budget: Budget, metrics: Metrics, interest: Option<mpsc::UnboundedSender<ChannelName>>) -> Self {
        Self {
            channels: DashMap::new(),
            sessions: DashMap::new(),
            connections: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            budget,
            interest,
            metrics,
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
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

    /// Subscribes a connection; returns the channels it now listens to among those asked.
    pub fn subscribe(&self, session: &Arc<Session>, channels: &[ChannelName]) -> Result<(), RequestError> {
        let mut guard = lock(&session.channels);
        if guard.closed {
            return Ok(());
        }
        let mine = &mut guard.list;
        let new: Vec<&ChannelName> = channels.iter().filter(|c| !mine.contains(c)).collect();
        if mine.len() + new.len() > MAX_CHANNELS_PER_CONNECTION {
            return Err(RequestError::TooManyChannels { max: MAX_CHANNELS_PER_CONNECTION });
        }
        for channel in new {
            // The dashmap entry guard is held while the subscriber is added, so a concurrent
            // removal of the emptied channel cannot orphan this subscription.
            let entry = self.channels.entry(channel.clone()).or_insert_with(|| {
                self.metrics.channels.inc();
                Arc::new(Channel { inner: Mutex::new(ChannelInner::default()) })
            });
            let first = {
                let mut inner = lock(&entry.inner);
                inner.subscribers.push(Arc::clone(session));
                inner.subscribers.len() == 1
            };
            drop(entry);
            mine.push(channel.clone());
            if first {
                self.interest_changed(channel);
            }
        }
        Ok(())
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
            }
            now_empty = inner.subscribers.is_empty();
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

    /// Fans an event out to the channel's subscribers; returns how many queues took it.
    pub fn publish(&self, channel: &ChannelName, payload: &[u8], received_at: Instant) -> usize {
        self.metrics.messages_received.inc();
        let Some(entry) = self.channels.get(channel) else { return 0 };
        let channel_state = Arc::clone(entry.value());
        drop(entry);
        let inner = &mut *lock(&channel_state.inner);
        inner.last_id += 1;
        let mut id_text = [0u8; 20];
        let id = format_id(&mut id_text, inner.last_id);
        let event =
            Arc::new(Event { frame: protocol::encode_event(channel, id, payload), received_at, is_delivery: true });
        let mut queued = 0;
        for session in &inner.subscribers {
            match session.outbound.push(&event) {
                Push::Queued => queued += 1,
                Push::Overflowed => {
                    self.metrics.slow_consumer_disconnects.inc();
                    tracing::info!(session = session.id.0, "slow consumer: closing with 4008");
                }
                Push::Closed => {}
            }
        }
        queued
    }

    /// Asks every connection to close with `close` (used by the drain).
    pub fn close_all_now(&self, close: Close) {
        for session in self.sessions() {
            session.outbound.close(close);
        }
    }
}

/// Writes `n` in decimal into `buffer` without allocating.
fn format_id(buffer: &mut [u8; 20], mut n: u64) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).expect("decimal digits are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn hub() -> (Arc<Hub>, mpsc::UnboundedReceiver<ChannelName>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::new(&mut Registry::default());
        (Arc::new(Hub::new(Budget::default(), metrics, Some(tx))), rx)
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
                let (_, body) = crate::wire::split_server_frame(&e.frame).unwrap();
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
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
        hub.subscribe(&a, &[name("x")]).unwrap();
        hub.subscribe(&b, &[name("x")]).unwrap();
        assert_eq!(hub.publish(&name("x"), b"1", Instant::now()), 2);
        assert_eq!(hub.publish(&name("y"), b"1", Instant::now()), 0);
        hub.publish(&name("x"), b"2", Instant::now());
        let (mut qa, mut qb) = (Vec::new(), Vec::new());
        a.outbound.drain_into(&mut qa);
        b.outbound.drain_into(&mut qb);
        assert!(Arc::ptr_eq(&qa[0], &qb[0]), "the same event object is shared");
        assert_eq!(qa.len(), 2);
        hub.publish(&name("x"), b"3", Instant::now());
        assert_eq!(drained_ids(&a), ["3"]);
    }

    /// The source hears of a channel's first subscriber and of its last one leaving.
    #[test]
    fn interest_follows_first_and_last_subscriber() {
        let (hub, mut interest) = hub();
        let a = hub.open_session();
        let b = hub.open_session();
        hub.subscribe(&a, &[name("x")]).unwrap();
        hub.subscribe(&b, &[name("x")]).unwrap();
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
        let hub = Arc::new(Hub::new(budget, Metrics::new(&mut Registry::default()), Some(tx)));
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
        assert!(hub.subscribe(&a, &many).is_err());
        assert!(a.channels().is_empty(), "nothing subscribed on refusal");
        hub.subscribe(&a, &many[..MAX_CHANNELS_PER_CONNECTION]).unwrap();
        assert_eq!(a.channels().len(), MAX_CHANNELS_PER_CONNECTION);
    }

    /// A subscribe that arrives after clean-up does not bring a finished connection back.
    #[test]
    fn no_subscribe_after_close() {
        let (hub, _) = hub();
        let a = hub.open_session();
        hub.close_session(&a);
        hub.subscribe(&a, &[name("x")]).unwrap();
        assert!(!hub.has_subscribers(&name("x")));
        assert!(a.channels().is_empty());
    }

    /// Ids are decimal without allocation.
    #[test]
    fn ids_format() {
        let mut buffer = [0u8; 20];
        assert_eq!(format_id(&mut buffer, 0), "0");
        assert_eq!(format_id(&mut buffer, u64::MAX), u64::MAX.to_string());
    }
}
