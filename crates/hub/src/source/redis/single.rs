//! Subscriptions on one Redis server (standalone, or the primary the Sentinels name): one
//! subscriber connection, plain SUBSCRIBE, one canary.
//!
//! The **subscriptions** task is the only one that sends SUBSCRIBE/UNSUBSCRIBE: it follows the
//! hub's interest changes (a channel's first subscriber or last one leaving) and, after every
//! (re)connect, subscribes everything the hub wants again (after a Sentinel failover fred
//! reconnects to the new primary, and this is what re-subscribes). fred completes a SUBSCRIBE
//! when it is written, not when Redis has run it, so a PING on the same connection follows each
//! one: its answer proves the subscription is in place, and only then are the channels marked
//! live (a resume reads history only from then on; see `crate::recovery`). After a *re*connect,
//! kept channels first catch up from history on what was published while the subscription was
//! down, so live clients lose nothing to a Redis blip or a failover either.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fred::prelude::*;
use tokio::sync::{broadcast, mpsc};

use super::canary::canary;
use super::{begin_catch_up, command, connection_log, pump, seed_positions, Shared, CANARY_STALL, COMMAND_TIMEOUT};
use crate::protocol::ChannelName;
use crate::recovery;
use crate::source::{LastEvent, NotReady};

/// The subscriber connection of a standalone or Sentinel source.
pub(super) struct Single {
    subscriber: Client,
    pub(super) last_event: Arc<LastEvent>,
}

impl Single {
    /// Connects the subscriber and spawns the pump, subscriptions, canary and log tasks.
    pub(super) fn start(
        shared: Shared,
        subscriber: Client,
        publisher: Client,
        interest: mpsc::UnboundedReceiver<ChannelName>,
    ) -> Self {
        let last_event = Arc::new(LastEvent::default());
        let forced = Arc::new(AtomicBool::new(false));
        // Receivers are taken before connecting so the first connect is seen too.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        subscriber.connect();
        let shutdown = shared.shutdown.clone();
        shutdown.spawn(pump(shared.clone(), messages, Arc::clone(&last_event)));
        shutdown.spawn(
            Subscriptions {
                shared: shared.clone(),
                subscriber: subscriber.clone(),
                last_event: Arc::clone(&last_event),
                forced: Arc::clone(&forced),
                interest,
                reconnects,
            }
            .run(),
        );
        shutdown.spawn(canary(shared, subscriber.clone(), publisher, Arc::clone(&last_event), Arc::clone(&forced)));
        shutdown.spawn(connection_log::run(subscriber.clone(), shutdown.clone()));
        Self { subscriber, last_event }
    }

    pub(super) fn readiness(&self) -> Result<(), NotReady> {
        readiness(&self.subscriber, &self.last_event)
    }

    pub(super) async fn quit(&self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.subscriber.quit()).await;
    }
}

pub(super) fn readiness(subscriber: &Client, last_event: &LastEvent) -> Result<(), NotReady> {
    if !subscriber.is_connected() {
        return Err(NotReady::RedisDisconnected);
    }
    // Silence counts from the last event, or from the (re)connect when none came since: a
    // subscription just re-made is not judged by how long the outage before it lasted (it was,
    // and the canary then forced a second, needless reconnect after every recovery).
    match last_event.stale(CANARY_STALL) {
        None => Ok(()),
        Some(silence) => Err(NotReady::SubscriptionSilent(silence)),
    }
}

/// The subscriptions task: the only sender of SUBSCRIBE/UNSUBSCRIBE, so they are applied in
/// order.
struct Subscriptions {
    shared: Shared,
    subscriber: Client,
    last_event: Arc<LastEvent>,
    /// The canary forced the last reconnect (the re-subscribe's cause is then `silent`).
    forced: Arc<AtomicBool>,
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
        let shared = &self.shared;
        let Shared { hub, prefix, canary_suffix, history, shutdown } = shared;
        self.last_event.forget();
        hub.mark_all_not_live();
        let wanted = hub.channel_names();
        if reconnected {
            hub.metrics.source_reconnects.inc();
            let cause = if self.forced.swap(false, Ordering::Relaxed) { "silent" } else { "reconnect" };
            shared.count_resubscribe(cause, "redis", wanted.len());
        }
        // Kept channels hold their live events back from now on, until what was published
        // while the subscription was down has been read from history.
        let catching_up = if reconnected { begin_catch_up(shared, &wanted) } else { Vec::new() };
        let mut channels: Vec<String> = wanted.iter().map(|c| prefix.redis_channel(c)).collect();
        channels.push(canary_suffix.clone());
        tracing::info!(channels = channels.len(), catching_up = catching_up.len(), "redis connected; subscribing");
        match subscribe_and_confirm(&self.subscriber, channels).await {
            Ok(()) => {
                hub.mark_live(&wanted);
                seed_positions(shared, wanted.clone());
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
                    seed_positions(&self.shared, wanted);
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
