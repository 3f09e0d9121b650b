//! The hub: who is connected, who listens to which channel, and the fan-out of events.
//!
//! The registry is a dashmap of channels; each channel has its own small lock, so publishing
//! on one channel never waits for another and there is no global lock on the publish path.
//! An event is framed once, under its channel's lock (which also fixes its `id` and so the
//! per-channel order), and the same bytes are pushed to every subscriber's queue.
//!
//! | module | owns |
//! |---|---|
//! | [`client`] | a connection as the hub sees it ([`Client`]): its queue, its channels, liveness |
//! | [`admission`] | the connection cap ([`Admission`]) and the draining flag |
//! | [`registry`] | channels and their subscribers: subscribe, unsubscribe, interest, liveness |
//! | [`fan_out`] | publishing an event to a channel's subscribers |
//! | [`flusher`] | writing what the fan-out queued, for connections whose writer is idle |
//! | [`seam`] | the pure state machine between a history replay and live delivery |
//! | [`replay`] | the hub's side of a resume and of a channel's catch-up, built on the seam |
//!
//! # Locks, and the order they are taken in
//!
//! 1. [`Client`]'s channel list (`client.channels`): subscribe, unsubscribe and clean-up of one
//!    connection hold it for the whole change, so one connection's changes never interleave.
//! 2. A shard of the channel map (`Hub::channels`, dashmap): held only while a channel is
//!    created (`entry`) or removed (`remove_if`), never on the publish path ([`Hub::publish`]
//!    clones the channel's `Arc` and lets the shard go).
//! 3. A channel's state (`Channel::inner`): its subscribers, recovering subscriptions, last id,
//!    catch-up. Publishing holds it while it pushes to every queue, which fixes the order.
//! 4. A connection's queue (`Outbound::state`): taken under 3 by each push, and alone by a
//!    flush (which writes to the socket while holding it). It never calls back into the hub.
//! 5. A flusher's list of connections to write (`flusher`): taken under 3 to add a connection,
//!    and alone by the flusher to take the list.
//!
//! Each is only ever taken while holding those above it, never the other way round. The map of
//! connections (`Hub::clients`) is taken alone, for registration and the drain.
//!
//! A subscription that resumes from an id is *recovering*: it sits beside the channel's live
//! subscribers, and the channel's live events are held for it in a [`seam::Seam`] while
//! `crate::recovery` replays history; [`Hub::finish_recovery`] then, under the channel's lock,
//! hands over the held events newer than the replay and makes the subscription live, so no event
//! falls between history and live, and none comes twice. A whole channel does the same after its
//! source reconnects ([`Hub::begin_catch_up`]).

pub mod admission;
pub mod client;
pub mod fan_out;
pub mod flusher;
pub mod registry;
pub mod replay;
mod seam;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use dashmap::DashMap;
use mt_budget::Budget;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::policy::ChannelPolicies;
use crate::protocol::ChannelName;

pub use admission::Admission;
pub use client::{Client, ClientId};
pub use replay::Finish;

use registry::Channel;

/// How the hub and its event source work together.
pub enum SourceLink {
    /// The embedded broker: events come in-process, so a channel is live as soon as it has a
    /// subscriber, and nobody needs to hear of interest changes.
    Embedded,
    /// A source that subscribes on demand (Redis): it hears of every channel whose first
    /// subscriber arrived or last one left, and a channel is live only once the source says its
    /// subscription is in place ([`Hub::mark_live`]).
    OnDemand { interest: mpsc::UnboundedSender<ChannelName> },
}

/// The registry and fan-out.
pub struct Hub {
    channels: DashMap<ChannelName, Arc<Channel>>,
    clients: DashMap<ClientId, Arc<Client>>,
    /// Admitted connections (see [`admission`]).
    connections: AtomicUsize,
    next_client: AtomicU64,
    draining: AtomicBool,
    budget: Budget,
    source: SourceLink,
    policies: ChannelPolicies,
    /// Woken when a channel becomes live (see [`Hub::mark_live`]).
    live_changed: Notify,
    /// Writes the fan-out's events (see [`flusher`]).
    flushers: flusher::Flushers,
    pub metrics: Metrics,
}

impl Hub {
    pub fn new(budget: Budget, metrics: Metrics, source: SourceLink, policies: ChannelPolicies) -> Self {
        Self {
            channels: DashMap::new(),
            clients: DashMap::new(),
            connections: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            budget,
            source,
            policies,
            live_changed: Notify::new(),
            flushers: flusher::Flushers::default(),
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
}
