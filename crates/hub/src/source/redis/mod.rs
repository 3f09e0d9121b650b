//! Redis as the event source, through fred: one server, a Sentinel-watched primary, or a Redis
//! Cluster with sharded pub/sub ([`target`] reads which from `REDIS_URL`).
//!
//! The **commands** ([`commands`]: `POST /publish`, the canaries, history reads) go over one
//! connection, or on a cluster over a connection to the primary owning the key's slot; the
//! **subscriptions** differ by layout:
//!
//! - [`single`] (standalone and Sentinel): one subscriber connection, SUBSCRIBE, one canary;
//!   fred follows a Sentinel failover to the new primary and the reconnect re-subscribes;
//! - [`cluster`]: one subscriber connection per primary, SSUBSCRIBE of each channel on the
//!   primary owning its slot, one canary per primary, and the cluster's slot map polled every
//!   second so a slot migration or a failover re-subscribes what moved.
//!
//! Common to both: the [`pump`] hands messages to the hub in arrival order; channels are
//! subscribed only while a local client wants them; a re-made subscription of a channel that
//! keeps history first catches up on what was published meanwhile (`recovery::catch_up`), so
//! a Redis blip, failover or slot move costs clients latency, never events; a subscription is
//! trusted only while its canary keeps arriving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use tokio::sync::{broadcast, mpsc};

use super::{LastEvent, NotReady, PublishError};

mod canary;
mod cluster;
pub mod commands;
mod connection_log;
mod once;
mod single;
pub mod target;
use crate::event_id::EventId;
use crate::history::{self, History};
use crate::hub::Hub;
use crate::protocol::{ChannelName, ChannelPrefix};
use crate::recovery;
use crate::shutdown::Shutdown;
pub use commands::Commands;
pub use target::{Layout, RedisTarget, TargetError};

/// How often the hub publishes its canaries.
pub const CANARY_INTERVAL: Duration = Duration::from_secs(1);
/// How long without any event before a subscription is declared silent.
pub const CANARY_STALL: Duration = Duration::from_secs(5);
/// Longest wait for one Redis command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages fred may buffer for the pump before the oldest are dropped (and counted).
const MESSAGE_BUFFER: usize = 16_384;

/// Why subscriptions were re-made: the label of `mt_stream_source_resubscribes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResubscribeLabels {
    /// `reconnect` (the connection came back), `slot_moved` (its slot now belongs to another
    /// primary), `failover` (its primary is gone; a replica took over), `silent` (the canary
    /// stopped: the connection was forced to reconnect).
    pub cause: &'static str,
    /// The primary (`host:port`) the channels are now subscribed on; `redis` outside a cluster.
    pub shard: String,
}

/// What the source's tasks share; each holds its own clone.
#[derive(Clone)]
struct Shared {
    hub: Arc<Hub>,
    prefix: ChannelPrefix,
    /// The private channel names of the canaries end with this (never a hub channel: `!` is
    /// not allowed in channel names).
    canary_suffix: String,
    /// Where kept channels catch up from after a reconnect, a move or a lag.
    history: History,
    shutdown: Shutdown,
}

impl Shared {
    fn is_canary(&self, redis_channel: &str) -> bool {
        redis_channel.ends_with(self.canary_suffix.as_str())
    }

    fn count_resubscribe(&self, cause: &'static str, shard: &str, channels: usize) {
        let labels = ResubscribeLabels { cause, shard: shard.to_owned() };
        self.hub.metrics.source_resubscribes.get_or_create(&labels).inc_by(channels as u64);
    }
}

/// The subscriptions, by layout.
enum Subscriptions {
    Single(single::Single),
    Cluster(cluster::Cluster),
}

/// The Redis source.
pub struct RedisSource {
    commands: Commands,
    subscriptions: Subscriptions,
    prefix: ChannelPrefix,
    hub: Arc<Hub>,
}

/// Why the Redis source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("cannot configure redis client: {0}")]
    Client(#[from] fred::error::Error),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl RedisSource {
    /// Builds the clients, starts connecting (retrying forever with backoff) and spawns the
    /// tasks. Does not wait for Redis.
    pub fn start(
        target: &RedisTarget,
        prefix: ChannelPrefix,
        hub: Arc<Hub>,
        interest: mpsc::UnboundedReceiver<ChannelName>,
        shutdown: &Shutdown,
    ) -> Result<Self, RedisSetupError> {
        let config = target.client_config()?;
        let commands = match target.layout {
            Layout::Cluster => Commands::Cluster(commands::ClusterRouter::new(config.clone())),
            Layout::Standalone | Layout::Sentinel => {
                let publisher = build_client(&config)?;
                publisher.connect();
                Commands::Single(publisher)
            }
        };
        let canary_suffix = format!(
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
            canary_suffix,
            history: History::Redis { commands: commands.clone(), prefix: prefix.clone() },
            shutdown: shutdown.clone(),
        };
        let subscriptions = match &commands {
            Commands::Single(publisher) => Subscriptions::Single(single::Single::start(
                shared,
                build_subscriber(&config)?,
                publisher.clone(),
                interest,
            )),
            Commands::Cluster(router) => {
                Subscriptions::Cluster(cluster::Cluster::start(shared, config, Arc::clone(router), interest))
            }
        };
        Ok(Self { commands, subscriptions, prefix, hub })
    }

    /// Publishes `payload` on `<prefix><channel>`, so every pod sees it: with the history
    /// script when the channel keeps history (returns the id), else a plain PUBLISH (SPUBLISH
    /// in a cluster).
    pub async fn publish(&self, channel: &ChannelName, payload: Bytes) -> Result<Option<EventId>, PublishError> {
        let redis_channel = self.prefix.redis_channel(channel);
        let policies = self.hub.policies();
        let sharded = self.commands.sharded();
        let client = self.commands.for_key(&redis_channel)?;
        if policies.keeps_history(channel) {
            let id = history::redis::publish(&client, &redis_channel, payload, &policies.limits, sharded)
                .await
                .inspect_err(|error| self.commands.after_error(&client, error))?;
            self.hub.metrics.messages_published.inc();
            return Ok(Some(id));
        }
        let publish = async {
            if sharded {
                client.spublish::<i64, _, _>(redis_channel, payload).await
            } else {
                client.publish::<i64, _, _>(redis_channel, payload).await
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, publish).await {
            Ok(Ok(_receivers)) => {
                self.hub.metrics.messages_published.inc();
                Ok(None)
            }
            Ok(Err(error)) => {
                self.commands.after_error(&client, &error);
                Err(PublishError::Redis(error))
            }
            Err(_) => Err(PublishError::Timeout(COMMAND_TIMEOUT)),
        }
    }

    /// The command connection(s), for other parts of the hub that keep state in Redis.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    pub fn prefix(&self) -> &ChannelPrefix {
        &self.prefix
    }

    /// The history kept in this Redis (read by resume).
    pub fn history(&self) -> History {
        History::Redis { commands: self.commands.clone(), prefix: self.prefix.clone() }
    }

    /// Ready while every subscription is connected and its canary arrived within
    /// [`CANARY_STALL`]; in a cluster the answer names the silent primary.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let ready = match &self.subscriptions {
            Subscriptions::Single(single) => single.readiness(),
            Subscriptions::Cluster(cluster) => cluster.readiness(),
        };
        self.hub.metrics.redis_connected.set(ready.is_ok() as i64);
        self.hub.metrics.source_up.set(ready.is_ok() as i64);
        ready
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        match &self.subscriptions {
            Subscriptions::Single(single) => single.last_event.age(),
            Subscriptions::Cluster(cluster) => cluster.last_event_age(),
        }
    }

    /// Closes every connection (after the drain).
    pub async fn quit(&self) {
        match &self.subscriptions {
            Subscriptions::Single(single) => single.quit().await,
            Subscriptions::Cluster(cluster) => cluster.quit().await,
        }
        self.commands.quit().await;
    }
}

/// A subscriber connection's client (its messages buffered up to [`MESSAGE_BUFFER`]).
pub(crate) fn build_subscriber(config: &fred::types::config::Config) -> Result<Client, fred::error::Error> {
    build(config, MESSAGE_BUFFER)
}

/// A command connection's client: it receives no messages, so its notification buffers stay
/// small (fred allocates every buffer at its full capacity: 16k slots on each of its channels
/// cost about 8 MiB per client).
pub(crate) fn build_client(config: &fred::types::config::Config) -> Result<Client, fred::error::Error> {
    build(config, 64)
}

fn build(config: &fred::types::config::Config, buffer: usize) -> Result<Client, fred::error::Error> {
    Builder::from_config(config.clone())
        .with_connection_config(|connection| {
            connection.connection_timeout = COMMAND_TIMEOUT;
            connection.internal_command_timeout = COMMAND_TIMEOUT;
            connection.max_command_attempts = 1;
        })
        .with_performance_config(|performance| {
            performance.broadcast_channel_capacity = buffer;
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        // Retry forever: 100 ms doubling to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
}

/// Reads one subscriber connection's messages in arrival order and fans them out; marks
/// `last_event` on each (canaries included).
async fn pump(shared: Shared, mut messages: broadcast::Receiver<fred::types::Message>, last_event: Arc<LastEvent>) {
    let Shared { hub, prefix, shutdown, .. } = &shared;
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
                if shared.is_canary(&message.channel) {
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

/// Starts the catch-up from history of channels whose subscription was just re-made (their
/// live events are held back until it is done); returns the ones that catch up.
fn begin_catch_up(shared: &Shared, channels: &[ChannelName]) -> Vec<(ChannelName, EventId)> {
    channels.iter().filter_map(|c| shared.hub.begin_catch_up(c).map(|from| (c.clone(), from))).collect()
}

/// Reads, for each newly live kept channel, where its history stands, so a catch-up after a
/// lag or reconnect that happens before its first event arrives still knows where to start
/// (one read each, in a tracked task; a failed read leaves the channel as it was).
fn seed_positions(shared: &Shared, channels: Vec<ChannelName>) {
    let Shared { hub, history, shutdown, .. } = shared;
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

async fn command<T>(future: impl std::future::Future<Output = Result<T, fred::error::Error>>) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("timed out after {COMMAND_TIMEOUT:?}")),
    }
}
