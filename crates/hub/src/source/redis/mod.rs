//! Redis pub/sub as the event source, through fred.
//!
//! Two connections: a subscriber (pub/sub mode) and a publisher (for `POST /publish`, `mt-stream
//! publish` and the canary). Three tasks, all tracked by the shutdown:
//!
//! - the **pump** reads the subscriber's messages in order and hands them to the hub;
//! - the **subscriptions** task is the only one that sends SUBSCRIBE/UNSUBSCRIBE: it follows the
//!   hub's interest changes (a channel's first subscriber or last one leaving) and, after every
//!   (re)connect, subscribes everything the hub wants again. fred completes a SUBSCRIBE when it
//!   is written, not when Redis has run it, so a PING on the same connection follows each one:
//!   its answer proves the subscription is in place, and only then are the channels marked live
//!   (a resume reads history only from then on; see `crate::recovery`). After a *re*connect,
//!   kept channels first catch up from history on what was published while the subscription
//!   was down (`recovery::catch_up`), so live clients lose nothing to a Redis blip either;
//! - the **canary** publishes a private event every [`CANARY_INTERVAL`]. The subscription is only
//!   trusted while events (canaries included) keep arriving: after [`CANARY_STALL`] without one,
//!   readiness fails with "subscription silent" and the subscriber is forced to reconnect. This
//!   catches the connection that is up but delivers nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use tokio::sync::{broadcast, mpsc};

use super::{LastEvent, NotReady, PublishError};

mod canary;
mod connection_log;
use crate::event_id::EventId;
use crate::history::{self, History};
use crate::hub::Hub;
use crate::protocol::{ChannelName, ChannelPrefix};
use crate::recovery;
use crate::shutdown::Shutdown;
use canary::canary;

/// How often the hub publishes its canary.
pub const CANARY_INTERVAL: Duration = Duration::from_secs(1);
/// How long without any event before the subscription is declared silent.
pub const CANARY_STALL: Duration = Duration::from_secs(5);
/// Longest wait for one Redis command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages fred may buffer for the pump before the oldest are dropped (and counted).
const MESSAGE_BUFFER: usize = 16_384;

/// What the source's three tasks share; each holds its own clone.
#[derive(Clone)]
struct Shared {
    hub: Arc<Hub>,
    prefix: ChannelPrefix,
    /// The private channel the canary is published on (never a hub channel: `!` is not allowed
    /// in channel names).
    canary_channel: String,
    /// When the last event (canary included) arrived; written by the pump, read by readiness.
    last_event: Arc<LastEvent>,
    /// Where kept channels catch up from after a reconnect or a lag.
    history: History,
    shutdown: Shutdown,
}

/// The Redis source.
pub struct RedisSource {
    subscriber: Client,
    publisher: Client,
    prefix: ChannelPrefix,
    hub: Arc<Hub>,
    last_event: Arc<LastEvent>,
}

/// Why the Redis source could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure redis client: {0}")]
pub struct RedisSetupError(#[from] fred::error::Error);

impl RedisSource {
    /// Builds both clients, starts connecting (retrying forever with backoff) and spawns the
    /// pump, subscriptions and canary tasks. Does not wait for Redis.
    pub fn start(
        url: &str,
        prefix: ChannelPrefix,
        hub: Arc<Hub>,
        interest: mpsc::UnboundedReceiver<ChannelName>,
        shutdown: &Shutdown,
    ) -> Result<Self, RedisSetupError> {
        let config = Config::from_url(url)?;
        let subscriber = build_client(&config)?;
        let publisher = build_client(&config)?;
        let last_event = Arc::new(LastEvent::default());

        // Receivers are taken before connecting so the first connect is seen too.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        subscriber.connect();
        publisher.connect();

        let canary_channel = format!(
            "{}!canary.{}.{}",
            prefix.as_str(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let shared = Shared {
            hub: Arc::clone(&hub),
            prefix: prefix.clone(),
            canary_channel,
            last_event: Arc::clone(&last_event),
            history: History::Redis { client: publisher.clone(), prefix: prefix.clone() },
            shutdown: shutdown.clone(),
        };
        shutdown.spawn(pump(shared.clone(), messages));
        shutdown.spawn(
            Subscriptions { shared: shared.clone(), subscriber: subscriber.clone(), interest, reconnects }.run(),
        );
        shutdown.spawn(canary(shared, subscriber.clone(), publisher.clone()));
        shutdown.spawn(connection_log::run(subscriber.clone(), shutdown.clone()));
        Ok(Self { subscriber, publisher, prefix, hub, last_event })
    }

    /// Publishes `payload` on `<prefix><channel>`, so every pod sees it: with the history
    /// script when the channel keeps history (returns the id), else a plain PUBLISH.
    pub async fn publish(&self, channel: &ChannelName, payload: Bytes) -> Result<Option<EventId>, PublishError> {
        let redis_channel = self.prefix.redis_channel(channel);
        let policies = self.hub.policies();
        if policies.keeps_history(channel) {
            let id = history::redis::publish(&self.publisher, &redis_channel, payload, &policies.limits).await?;
            self.hub.metrics.messages_published.inc();
            return Ok(Some(id));
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, self.publisher.publish::<i64, _, _>(redis_channel, payload)).await {
            Ok(Ok(_receivers)) => {
                self.hub.metrics.messages_published.inc();
                Ok(None)
            }
            Ok(Err(error)) => Err(PublishError::Redis(error)),
            Err(_) => Err(PublishError::Timeout(COMMAND_TIMEOUT)),
        }
    }

    /// The history kept in this Redis (read by resume).
    pub fn history(&self) -> History {
        History::Redis { client: self.publisher.clone(), prefix: self.prefix.clone() }
    }

    /// Ready while the subscriber is connected and events arrived within [`CANARY_STALL`].
    pub fn readiness(&self) -> Result<(), NotReady> {
        let ready = readiness(&self.subscriber, &self.last_event);
        self.hub.metrics.redis_connected.set(ready.is_ok() as i64);
        self.hub.metrics.source_up.set(ready.is_ok() as i64);
        ready
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        self.last_event.get().map(|t| t.elapsed())
    }

    /// Closes both connections (after the drain).
    pub async fn quit(&self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.subscriber.quit()).await;
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.publisher.quit()).await;
    }
}

fn readiness(subscriber: &Client, last_event: &LastEvent) -> Result<(), NotReady> {
    if !subscriber.is_connected() {
        return Err(NotReady::RedisDisconnected);
    }
    // Silence counts from the last event, or from the (re)connect when none came since: a
    // subscription just re-made is not judged by how long the outage before it lasted (it was,
    // and the canary then forced a second, needless reconnect after every recovery).
    match (last_event.get(), last_event.silence()) {
        (Some(_), silence) if silence <= CANARY_STALL => Ok(()),
        (_, silence) => Err(NotReady::SubscriptionSilent(silence)),
    }
}

fn build_client(config: &Config) -> Result<Client, fred::error::Error> {
    Builder::from_config(config.clone())
        .with_connection_config(|connection| {
            connection.connection_timeout = COMMAND_TIMEOUT;
            connection.internal_command_timeout = COMMAND_TIMEOUT;
            connection.max_command_attempts = 1;
        })
        .with_performance_config(|performance| {
            performance.broadcast_channel_capacity = MESSAGE_BUFFER;
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        // Retry forever: 100 ms doubling to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
}

/// Reads subscriber messages in arrival order and fans them out.
async fn pump(shared: Shared, mut messages: broadcast::Receiver<fred::types::Message>) {
    let Shared { hub, prefix, canary_channel, last_event, shutdown, .. } = &shared;
    loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = messages.recv() => received,
        };
        match received {
            Ok(message) => {
                let now = Instant::now();
                last_event.mark(now);
                if &*message.channel == canary_channel.as_str() {
                    continue;
                }
                let Some(channel) = prefix.hub_channel(&message.channel) else { continue };
                let message = message.value.as_bytes().unwrap_or_default();
                let (id, payload) = history::redis::split_live_message(message);
                hub.publish(&channel, id, payload, now);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                hub.metrics.source_lagged_messages.inc_by(missed);
                let (catching_up, closed) = recover_from_lag(&shared);
                tracing::warn!(
                    missed,
                    catching_up,
                    closed,
                    "hub fell behind redis and dropped events: kept channels catch up from history, clients of the others are closed with 1013"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// After the pump lost messages (the hub fell more than [`MESSAGE_BUFFER`] behind its
/// subscriber connection), nobody knows which channels they were on, so every channel is
/// treated as hit: kept channels catch up from history exactly as after a reconnect (their
/// clients see every event, in order), and the clients of channels without history are closed
/// with 1013 and a `closing` notice, so none is left live with a silent hole. Returns how many
/// channels catch up and how many clients were closed.
fn recover_from_lag(shared: &Shared) -> (usize, usize) {
    let hub = &shared.hub;
    let mut catching_up = Vec::new();
    let mut closed = 0;
    for channel in hub.channel_names() {
        if hub.policies().keeps_history(&channel) {
            if let Some(from) = hub.begin_catch_up(&channel) {
                catching_up.push((channel, from));
            }
        } else {
            closed += hub.close_subscribers(&channel, crate::close::Close::SourceLagged);
        }
    }
    let count = catching_up.len();
    if !catching_up.is_empty() {
        shared.shutdown.spawn(recovery::catch_up(shared.history.clone(), Arc::clone(hub), catching_up));
    }
    (count, closed)
}

/// The subscriptions task: the only sender of SUBSCRIBE/UNSUBSCRIBE, so they are applied in
/// order.
struct Subscriptions {
    shared: Shared,
    subscriber: Client,
    /// Channels whose local interest changed (from the hub).
    interest: mpsc::UnboundedReceiver<ChannelName>,
    /// Every (re)connect of the subscriber.
    reconnects: broadcast::Receiver<fred::types::config::Server>,
}

impl Subscriptions {
    async fn run(mut self) {
        let mut first_connect = true;
        loop {
            tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return,
                reconnect = self.reconnects.recv() => {
                    if matches!(reconnect, Err(broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    self.on_connect(!first_connect).await;
                    first_connect = false;
                }
                Some(first) = self.interest.recv() => self.on_interest(first).await,
            }
        }
    }

    /// After every (re)connect: subscribe everything the hub wants again (and the canary); after
    /// a *re*connect, kept channels first catch up from history.
    async fn on_connect(&self, reconnected: bool) {
        let Shared { hub, prefix, canary_channel, last_event, history, shutdown } = &self.shared;
        if reconnected {
            hub.metrics.source_reconnects.inc();
        }
        last_event.forget();
        hub.mark_all_not_live();
        let wanted = hub.channel_names();
        // Kept channels hold their live events back from now on, until what was published
        // while the subscription was down has been read from history.
        let catching_up: Vec<(ChannelName, EventId)> = if reconnected {
            wanted.iter().filter_map(|c| hub.begin_catch_up(c).map(|from| (c.clone(), from))).collect()
        } else {
            Vec::new()
        };
        let mut channels: Vec<String> = wanted.iter().map(|c| prefix.redis_channel(c)).collect();
        channels.push(canary_channel.clone());
        tracing::info!(channels = channels.len(), catching_up = catching_up.len(), "redis connected; subscribing");
        match subscribe_and_confirm(&self.subscriber, channels).await {
            Ok(()) => {
                hub.mark_live(&wanted);
                self.seed_positions(wanted.clone());
                if !catching_up.is_empty() {
                    shutdown.spawn(recovery::catch_up(history.clone(), Arc::clone(hub), catching_up));
                }
            }
            Err(error) => {
                for (channel, _) in &catching_up {
                    hub.abandon_catch_up(channel);
                }
                tracing::warn!(%error, "resubscribe failed; forcing a reconnect");
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.subscriber.force_reconnection()).await;
            }
        }
    }

    /// Reads, for each newly live kept channel, where its history stands, so a catch-up after a
    /// lag or reconnect that happens before its first event arrives still knows where to start
    /// (one read each, in a tracked task; a failed read leaves the channel as it was).
    fn seed_positions(&self, channels: Vec<ChannelName>) {
        let Shared { hub, history, shutdown, .. } = &self.shared;
        let kept: Vec<ChannelName> = channels.into_iter().filter(|c| hub.policies().keeps_history(c)).collect();
        if kept.is_empty() {
            return;
        }
        let (hub, history) = (Arc::clone(hub), history.clone());
        shutdown.spawn(async move {
            let beyond_everything = EventId::new(u64::MAX, u64::MAX);
            let limit = history::PageLimit { events: 1, bytes: 1 };
            for channel in kept {
                match history.read_after(&channel, beyond_everything, limit).await {
                    Ok(history::Read::Page(page)) => hub.seed_position(&channel, Some(page.last_id)),
                    Ok(history::Read::NoStream) => hub.seed_position(&channel, None),
                    Ok(history::Read::Unreadable(_)) | Err(_) => {}
                }
            }
        });
    }

    /// Applies a batch of interest changes: subscribe the channels that gained their first
    /// subscriber, unsubscribe those that lost their last.
    async fn on_interest(&mut self, first: ChannelName) {
        let Shared { hub, prefix, .. } = &self.shared;
        let mut changed: HashSet<ChannelName> = HashSet::from([first]);
        while let Ok(more) = self.interest.try_recv() {
            changed.insert(more);
        }
        let (wanted, unwanted): (Vec<ChannelName>, Vec<ChannelName>) =
            changed.into_iter().partition(|c| hub.has_subscribers(c));
        if !wanted.is_empty() {
            let names: Vec<String> = wanted.iter().map(|c| prefix.redis_channel(c)).collect();
            match subscribe_and_confirm(&self.subscriber, names).await {
                Ok(()) => {
                    hub.mark_live(&wanted);
                    self.seed_positions(wanted);
                }
                // The next (re)connect subscribes everything the hub wants.
                Err(error) => tracing::warn!(%error, "subscribe failed"),
            }
        }
        if !unwanted.is_empty() {
            let names: Vec<String> = unwanted.iter().map(|c| prefix.redis_channel(c)).collect();
            if let Err(error) = command(self.subscriber.unsubscribe(names)).await {
                tracing::warn!(%error, "unsubscribe failed");
            }
        }
    }
}

/// Subscribes, then waits for the answer to a PING sent after it on the same connection: Redis
/// runs a connection's commands in order, so the subscription is then in place.
async fn subscribe_and_confirm(subscriber: &Client, channels: Vec<String>) -> Result<(), String> {
    command(subscriber.subscribe(channels)).await?;
    command(subscriber.ping::<Value>(None)).await.map(|_| ())
}

async fn command<T>(future: impl std::future::Future<Output = Result<T, fred::error::Error>>) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("timed out after {COMMAND_TIMEOUT:?}")),
    }
}
