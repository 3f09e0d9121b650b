//! Subscriptions on a Redis Cluster, with sharded pub/sub: each channel is SSUBSCRIBEd on the
//! primary owning its slot (where the publish script's SPUBLISH goes), over one subscriber
//! connection per primary ([`shard`]).
//!
//! One task owns every subscription, so they change in order. It follows the hub's interest,
//! and every [`CANARY_INTERVAL`] it:
//!
//! 1. reads the slot map again (`CLUSTER SLOTS` from a node, [`slots`]) and hands it to the
//!    command router (`commands`), so publishes and history reads go to the slot's owner;
//! 2. moves every channel whose slot now has another owner: a slot migrated (Redis drops the
//!    old subscription with an unsolicited `sunsubscribe`, which the client library does not
//!    pass on: this comparison is what notices it) or a replica took over from a dead primary.
//!    A moved channel is subscribed on its new primary and, once that is confirmed, catches up
//!    from history from the last id this hub delivered, so the move costs latency, not events;
//!    connections to nodes that are no longer primaries are closed;
//! 3. publishes each primary's canary (SPUBLISH on a channel in a slot it owns) and forces a
//!    reconnect of a subscriber connection whose canary has not arrived for [`CANARY_STALL`].
//!
//! A subscriber connection's reconnect re-subscribes its channels the same way (catch-up
//! included); a `MOVED` answer to an SSUBSCRIBE makes the next round come at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Config, Server};
use tokio::sync::mpsc;

use super::commands::ClusterRouter;
use super::{command, Shared, CANARY_INTERVAL, CANARY_STALL};
use crate::event_id::EventId;
use crate::lock::lock;
use crate::protocol::ChannelName;
use crate::source::{LastEvent, NotReady};
use shard::{Placement, Shard};
use slots::MapReader;
pub(super) use slots::SlotMap;

mod shard;
mod slots;

/// What readiness and the metrics see of one primary's subscriber connection.
struct ShardView {
    name: String,
    client: Client,
    last_event: Arc<LastEvent>,
}

/// The cluster subscriptions, as the rest of the source sees them.
pub(super) struct Cluster {
    view: Arc<Mutex<Vec<ShardView>>>,
}

impl Cluster {
    /// Spawns the subscriptions task; it connects to the primaries once the slot map is known.
    pub(super) fn start(
        shared: Shared,
        base: Config,
        router: Arc<ClusterRouter>,
        interest: mpsc::UnboundedReceiver<ChannelName>,
    ) -> Self {
        let view = Arc::new(Mutex::new(Vec::new()));
        let (connects_tx, connects) = mpsc::unbounded_channel();
        let task = Task {
            shared: shared.clone(),
            base: base.clone(),
            router,
            interest,
            connects,
            connects_tx,
            shards: BTreeMap::new(),
            unplaced: HashMap::new(),
            map: None,
            map_reader: MapReader::new(base.clone()),
            view: Arc::clone(&view),
            sequence: 0,
        };
        shared.shutdown.spawn(task.run());
        Self { view }
    }

    /// Ready while every primary's subscriber is connected and its canary arrived within
    /// [`CANARY_STALL`]; else the answer names the first primary that is not.
    pub(super) fn readiness(&self) -> Result<(), NotReady> {
        readiness(&lock(&self.view))
    }

    /// The age of the stalest primary's last event.
    pub(super) fn last_event_age(&self) -> Option<Duration> {
        last_event_age(&lock(&self.view))
    }

    pub(super) async fn quit(&self) {
        let clients: Vec<Client> = lock(&self.view).iter().map(|shard| shard.client.clone()).collect();
        for client in clients {
            let _ = command(client.quit()).await;
        }
    }
}

fn readiness(view: &[ShardView]) -> Result<(), NotReady> {
    if view.is_empty() {
        return Err(NotReady::RedisDisconnected);
    }
    for shard in view {
        if !shard.client.is_connected() {
            return Err(NotReady::ShardDisconnected(shard.name.clone()));
        }
        if let Some(silence) = shard.last_event.stale(CANARY_STALL) {
            return Err(NotReady::ShardSilent { shard: shard.name.clone(), silence });
        }
    }
    Ok(())
}

fn last_event_age(view: &[ShardView]) -> Option<Duration> {
    view.iter().map(|shard| shard.last_event.age()).try_fold(Duration::ZERO, |oldest, age| Some(oldest.max(age?)))
}

struct Task {
    shared: Shared,
    /// The cluster's client configuration; each primary's subscriber is built from it.
    base: Config,
    /// Where the hub's commands go; it follows the slot map read here.
    router: Arc<ClusterRouter>,
    interest: mpsc::UnboundedReceiver<ChannelName>,
    /// Every (re)connect of a primary's subscriber.
    connects: mpsc::UnboundedReceiver<Server>,
    connects_tx: mpsc::UnboundedSender<Server>,
    shards: BTreeMap<Server, Shard>,
    /// Channels whose slot had no reachable owner at the last map, with their catch-up start.
    unplaced: HashMap<ChannelName, Option<EventId>>,
    map: Option<SlotMap>,
    map_reader: MapReader,
    view: Arc<Mutex<Vec<ShardView>>>,
    sequence: u64,
}

impl Task {
    async fn run(mut self) {
        let mut ticks = tokio::time::interval(CANARY_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stale_map = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return,
                Some(server) = self.connects.recv() => self.on_connected(server).await,
                Some(first) = self.interest.recv() => self.on_interest(first).await,
                _ = ticks.tick() => self.on_tick().await,
                () = self.router.stale.notified() => true,
            };
            if stale_map {
                ticks.reset_immediately();
            }
        }
    }

    /// A primary's subscriber (re)connected: subscribe its channels again (after a reconnect,
    /// the kept ones catch up). Returns whether the slot map looked stale.
    async fn on_connected(&mut self, server: Server) -> bool {
        let Some(shard) = self.shards.get_mut(&server) else { return false };
        if let Some(cause) = shard.on_connected(&self.shared) {
            self.shared.hub.metrics.source_reconnects.inc();
            self.shared.count_resubscribe(cause, &shard.name(), shard.channels.len());
        }
        tracing::info!(shard = %server, channels = shard.channels.len(), "redis cluster primary connected; subscribing");
        self.settle(&server).await
    }

    /// Applies a batch of interest changes.
    async fn on_interest(&mut self, first: ChannelName) -> bool {
        let mut changed: HashSet<ChannelName> = HashSet::from([first]);
        while let Ok(more) = self.interest.try_recv() {
            changed.insert(more);
        }
        let (wanted, unwanted): (Vec<ChannelName>, Vec<ChannelName>) =
            changed.into_iter().partition(|c| self.shared.hub.has_subscribers(c));
        if !unwanted.is_empty() {
            for channel in &unwanted {
                self.unplaced.remove(channel);
            }
            for shard in self.shards.values_mut() {
                shard.take(&self.shared, &unwanted).await;
            }
        }
        let placed = self.place_new(wanted);
        let mut stale = false;
        for server in placed {
            stale |= self.settle(&server).await;
        }
        stale
    }

    /// Places channels not on any shard yet on the primary owning their slot (once the slot map
    /// is known); returns the shards that got some.
    fn place_new(&mut self, channels: Vec<ChannelName>) -> HashSet<Server> {
        let fresh = channels.into_iter().map(|channel| (channel, None)).collect();
        self.place(fresh)
    }

    /// Places channels on the primary owning their slot, each waiting to be subscribed there
    /// (with where its catch-up starts, if it needs one); a channel already placed is left,
    /// one whose slot has no owner (or no connection) waits in `unplaced` for the next map.
    fn place(&mut self, channels: Vec<(ChannelName, Option<EventId>)>) -> HashSet<Server> {
        let mut touched = HashSet::new();
        for (channel, catch_up_from) in channels {
            if self.shards.values().any(|shard| shard.channels.contains_key(&channel)) {
                continue;
            }
            let owner = self.map.as_ref().and_then(|map| map.owner_of(&self.shared.prefix.redis_channel(&channel)));
            match owner.and_then(|owner| self.shards.get_mut(owner)) {
                Some(shard) => {
                    self.unplaced.remove(&channel);
                    shard.channels.insert(channel, Placement::Pending { catch_up_from });
                    touched.insert(shard.server.clone());
                }
                None => {
                    let kept = self.unplaced.entry(channel).or_insert(catch_up_from);
                    *kept = kept.or(catch_up_from);
                }
            }
        }
        touched
    }

    async fn settle(&mut self, server: &Server) -> bool {
        let Some(shard) = self.shards.get_mut(server) else { return false };
        match shard.settle(&self.shared).await {
            Ok(()) => false,
            Err(error) => {
                let stale = ["MOVED ", "ASK ", "CROSSSLOT"].iter().any(|answer| error.contains(answer));
                tracing::warn!(shard = %server, %error, "ssubscribe failed; retrying with a fresh slot map");
                stale
            }
        }
    }

    /// The periodic round: slot map, moves, subscriptions still waiting, canaries, silence.
    async fn on_tick(&mut self) -> bool {
        if let Some(map) =
            self.map_reader.read(&self.shards.keys().cloned().collect::<Vec<_>>(), self.sequence as usize).await
        {
            if self.map.as_ref() != Some(&map) {
                self.apply_map(map).await;
            }
        }
        let mut stale = false;
        let servers: Vec<Server> = self.shards.keys().cloned().collect();
        for server in &servers {
            stale |= self.settle(server).await;
        }
        self.publish_canaries();
        self.reconnect_silent().await;
        self.publish_view();
        stale
    }

    /// Follows a new slot map: connects to new primaries, moves channels whose slot changed
    /// owner, gives each primary a canary it owns, and closes connections to former primaries.
    async fn apply_map(&mut self, map: SlotMap) {
        self.router.set_map(map.clone());
        let primaries = map.primaries();
        for primary in &primaries {
            if !self.shards.contains_key(primary) {
                match Shard::connect(&self.shared, &self.base, primary.clone(), self.connects_tx.clone()) {
                    Ok(shard) => {
                        self.shards.insert(primary.clone(), shard);
                    }
                    Err(error) => tracing::warn!(shard = %primary, %error, "cannot build a subscriber for a primary"),
                }
            }
        }
        // Which channels now belong elsewhere, from where to where.
        let mut moves: BTreeMap<(Server, Server), Vec<ChannelName>> = BTreeMap::new();
        for (server, shard) in &self.shards {
            for channel in shard.channels.keys() {
                if let Some(owner) = map.owner_of(&self.shared.prefix.redis_channel(channel)) {
                    if owner != server && self.shards.contains_key(owner) {
                        moves.entry((server.clone(), owner.clone())).or_default().push(channel.clone());
                    }
                }
            }
        }
        for ((from, to), channels) in moves {
            let cause = if primaries.contains(&from) { "slot_moved" } else { "failover" };
            let taken = match self.shards.get_mut(&from) {
                Some(shard) => shard.take(&self.shared, &channels).await,
                None => continue,
            };
            let moved: Vec<ChannelName> = taken.iter().map(|(channel, _)| channel.clone()).collect();
            self.shared.hub.mark_not_live(&moved);
            let Some(target) = self.shards.get_mut(&to) else { continue };
            for (channel, placement) in taken {
                let catch_up_from = match placement {
                    Placement::Pending { catch_up_from } => catch_up_from,
                    Placement::Subscribed => self.shared.hub.begin_catch_up(&channel),
                };
                target.channels.insert(channel, Placement::Pending { catch_up_from });
            }
            self.shared.count_resubscribe(cause, &target.name(), moved.len());
            tracing::info!(from = %from, to = %to, cause, channels = moved.len(), "channels moved to another primary; re-subscribing and catching up from history");
        }
        let gone: Vec<Server> = self.shards.keys().filter(|server| !primaries.contains(server)).cloned().collect();
        let mut orphans = Vec::new();
        for server in gone {
            if let Some(mut shard) = self.shards.remove(&server) {
                tracing::info!(shard = %server, "no longer a primary; closing its subscriber connection");
                // Channels no other primary took (their slot has no owner yet): they wait,
                // not live, and catch up wherever they are subscribed next.
                let left: Vec<ChannelName> = shard.channels.keys().cloned().collect();
                for (channel, placement) in shard.take(&self.shared, &left).await {
                    let catch_up_from = match placement {
                        Placement::Pending { catch_up_from } => catch_up_from,
                        Placement::Subscribed => self.shared.hub.begin_catch_up(&channel),
                    };
                    orphans.push((channel, catch_up_from));
                }
                shard.close();
            }
        }
        let waiting: Vec<ChannelName> = orphans.iter().map(|(channel, _)| channel.clone()).collect();
        self.shared.hub.mark_not_live(&waiting);
        for (server, shard) in &mut self.shards {
            let owned = shard.canary.as_deref().is_some_and(|canary| map.owner_of(canary) == Some(server));
            if !owned {
                if let (Some(old), true) = (shard.canary.take(), shard.canary_subscribed) {
                    let _ = command(shard.client.sunsubscribe(old)).await;
                }
                shard.canary = map.canary_channel(&self.shared.canary_suffix, server);
                shard.canary_subscribed = false;
            }
        }
        self.map = Some(map);
        orphans.extend(self.unplaced.drain());
        self.place(orphans);
        let wanted: Vec<ChannelName> = self.shared.hub.channel_names();
        self.place_new(wanted);
        self.publish_view();
    }

    /// Publishes each primary's canary, each in its own task so a dead primary does not hold
    /// up the round.
    fn publish_canaries(&mut self) {
        self.sequence += 1;
        for shard in self.shards.values() {
            let Some(canary) = shard.canary.clone() else { continue };
            let Ok(client) = self.router.client_for(&canary) else { continue };
            let sequence = self.sequence.to_string();
            self.shared.shutdown.spawn(async move {
                let _ = command(client.spublish::<i64, _, _>(canary, sequence)).await;
            });
        }
    }

    /// Forces a reconnect of every connected subscriber whose canary has stopped arriving.
    async fn reconnect_silent(&mut self) {
        for shard in self.shards.values_mut() {
            let silence = shard.last_event.silence();
            if shard.client.is_connected() && silence >= CANARY_STALL && shard.last_forced.elapsed() >= CANARY_STALL {
                tracing::warn!(shard = %shard.server, ?silence, "redis cluster primary's subscription silent; forcing a reconnect");
                shard.force_reconnect().await;
            }
        }
    }

    /// Refreshes what readiness sees, and the source's gauges.
    fn publish_view(&self) {
        let view: Vec<ShardView> = self
            .shards
            .values()
            .map(|shard| ShardView {
                name: shard.name(),
                client: shard.client.clone(),
                last_event: Arc::clone(&shard.last_event),
            })
            .collect();
        let metrics = &self.shared.hub.metrics;
        let ready = readiness(&view).is_ok() as i64;
        metrics.redis_connected.set(ready);
        metrics.source_up.set(ready);
        if let Some(age) = last_event_age(&view) {
            metrics.source_last_event_age_seconds.set(age.as_secs_f64());
        }
        *lock(&self.view) = view;
    }
}
