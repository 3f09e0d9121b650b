//! One primary of the cluster as the hub sees it: a subscriber connection to that node alone,
//! the channels placed on it, its canary, and when it last delivered anything.
//!
//! Each SSUBSCRIBE names one channel (the client library matches one reply to each command; it
//! also keeps channels of different slots out of one command, which Redis refuses with
//! CROSSSLOT), and every batch is followed by a PING on the same connection: its answer proves
//! them all in place. A channel is only marked live (and its catch-up from history started)
//! after that.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fred::prelude::*;
use fred::types::config::{Config, Server};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::commands::node_config;
use super::super::{command, connection_log, pump, seed_positions, Shared, COMMAND_TIMEOUT};
use crate::event_id::EventId;
use crate::protocol::ChannelName;
use crate::recovery;
use crate::source::LastEvent;

/// A channel placed on a shard: confirmed subscribed there, or waiting to be (with where its
/// catch-up from history starts, when it moved here from another primary or reconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    Subscribed,
    Pending { catch_up_from: Option<EventId> },
}

pub(super) struct Shard {
    pub server: Server,
    pub client: Client,
    pub last_event: Arc<LastEvent>,
    pub channels: HashMap<ChannelName, Placement>,
    /// The canary channel this shard is subscribed to (or will be, once connected).
    pub canary: Option<String>,
    pub canary_subscribed: bool,
    /// The connection has been up at least once (a later connect is a reconnect).
    pub connected_once: bool,
    pub last_forced: Instant,
    /// Why the next connect re-subscribes: `reconnect`, or `silent` after a forced one.
    pub next_cause: &'static str,
    tasks: Vec<JoinHandle<()>>,
}

impl Shard {
    /// A subscriber connection to `server` alone (same credentials and TLS as the cluster),
    /// with its pump and its connection log; its (re)connects are reported on `connects`.
    pub fn connect(
        shared: &Shared,
        base: &Config,
        server: Server,
        connects: mpsc::UnboundedSender<Server>,
    ) -> Result<Self, fred::error::Error> {
        let client = super::super::build_subscriber(&node_config(base, &server))?;
        let last_event = Arc::new(LastEvent::default());
        let messages = client.message_rx();
        let mut reconnects = client.reconnect_rx();
        client.connect();
        let shutdown = &shared.shutdown;
        let forward_to = server.clone();
        let tasks = vec![
            shutdown.spawn(pump(shared.clone(), messages, Arc::clone(&last_event))),
            shutdown.spawn(connection_log::run(client.clone(), shutdown.clone())),
            shutdown.spawn(async move {
                loop {
                    match reconnects.recv().await {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if connects.send(forward_to.clone()).is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }),
        ];
        Ok(Self {
            server,
            client,
            last_event,
            channels: HashMap::new(),
            canary: None,
            canary_subscribed: false,
            connected_once: false,
            last_forced: Instant::now(),
            next_cause: "reconnect",
            tasks,
        })
    }

    /// The primary's address, as metrics and readiness name it.
    pub fn name(&self) -> String {
        self.server.to_string()
    }

    /// After a (re)connect nothing is subscribed any more: every channel waits again, and after
    /// a *re*connect the kept ones catch up from where this hub last was. Returns whether it was
    /// a reconnect, and its cause.
    pub fn on_connected(&mut self, shared: &Shared) -> Option<&'static str> {
        let reconnected = self.connected_once;
        self.connected_once = true;
        self.last_event.forget();
        self.canary_subscribed = false;
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        shared.hub.mark_not_live(&channels);
        for channel in channels {
            let placement = self.channels.get_mut(&channel).expect("listed above");
            let catch_up_from = match placement {
                Placement::Pending { catch_up_from } => *catch_up_from,
                Placement::Subscribed if reconnected => shared.hub.begin_catch_up(&channel),
                Placement::Subscribed => None,
            };
            *placement = Placement::Pending { catch_up_from };
        }
        let cause = std::mem::replace(&mut self.next_cause, "reconnect");
        reconnected.then_some(cause)
    }

    /// Subscribes what waits (the canary first), confirms with a PING, then marks the channels
    /// live and starts their catch-ups. Returns the error text when Redis refused or did not
    /// answer (everything then still waits; `MOVED` means the slot map is stale).
    pub async fn settle(&mut self, shared: &Shared) -> Result<(), String> {
        if !self.client.is_connected() {
            return Ok(());
        }
        let waiting: Vec<ChannelName> = self
            .channels
            .iter()
            .filter(|(_, placement)| matches!(placement, Placement::Pending { .. }))
            .map(|(channel, _)| channel.clone())
            .collect();
        let canary = self.canary.clone().filter(|_| !self.canary_subscribed);
        if waiting.is_empty() && canary.is_none() {
            return Ok(());
        }
        // One channel per SSUBSCRIBE: fred matches one reply to each command, and channels of
        // different slots in one SSUBSCRIBE are refused (CROSSSLOT) anyway.
        for name in canary.iter().cloned().chain(waiting.iter().map(|c| shared.prefix.redis_channel(c))) {
            command(self.client.ssubscribe(name)).await?;
        }
        command(self.client.ping::<Value>(None)).await?;
        self.canary_subscribed = true;
        let mut catching_up = Vec::new();
        let mut fresh = Vec::new();
        for channel in &waiting {
            let Some(placement) = self.channels.get_mut(channel) else { continue };
            if let Placement::Pending { catch_up_from } = *placement {
                match catch_up_from {
                    Some(from) => catching_up.push((channel.clone(), from)),
                    None => fresh.push(channel.clone()),
                }
            }
            *placement = Placement::Subscribed;
        }
        shared.hub.mark_live(&waiting);
        seed_positions(shared, fresh);
        if !catching_up.is_empty() {
            shared.shutdown.spawn(recovery::catch_up(shared.history.clone(), Arc::clone(&shared.hub), catching_up));
        }
        Ok(())
    }

    /// Takes `channels` off this shard (they lost their last local subscriber, or moved to
    /// another primary) and stops listening to them here; returns how each was placed.
    pub async fn take(&mut self, shared: &Shared, channels: &[ChannelName]) -> Vec<(ChannelName, Placement)> {
        let mut taken = Vec::new();
        let mut names = Vec::new();
        for channel in channels {
            if let Some(placement) = self.channels.remove(channel) {
                if placement == Placement::Subscribed {
                    names.push(shared.prefix.redis_channel(channel));
                }
                taken.push((channel.clone(), placement));
            }
        }
        if self.client.is_connected() {
            // SUNSUBSCRIBE is answered out of band; fred completes it once written.
            for name in names {
                let _ = command(self.client.sunsubscribe(name)).await;
            }
        }
        taken
    }

    /// Forces the connection to reconnect (its canary went silent).
    pub async fn force_reconnect(&mut self) {
        self.last_forced = Instant::now();
        self.next_cause = "silent";
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.force_reconnection()).await;
    }

    /// Closes the connection and ends its tasks (the node is no longer a primary); its channels
    /// must have been taken off first.
    pub fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        let client = self.client;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await;
        });
    }
}
