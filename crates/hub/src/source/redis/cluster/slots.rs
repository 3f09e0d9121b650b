//! The cluster's slot map as the hub uses it: which primary owns a channel's slot, and, for each
//! primary, a canary channel whose slot it owns (so an SPUBLISH of it reaches that primary's
//! subscribers only and proves that one subscription alive); and [`MapReader`], which reads it
//! from a node.

use std::collections::BTreeSet;

use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, Server, ServerConfig};

use super::super::commands::node_config;
use super::super::{command, COMMAND_TIMEOUT};

/// A channel's hash slot (Redis Cluster's CRC16 of the name, or of its `{hash tag}`).
pub(super) fn slot_of(redis_channel: &str) -> u16 {
    fred::util::redis_keyslot(redis_channel.as_bytes())
}

/// Which primary owns which slots, as the cluster last told the publisher connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::source::redis) struct SlotMap {
    /// `(first slot, last slot, primary)`, sorted by first slot.
    ranges: Vec<(u16, u16, Server)>,
}

impl SlotMap {
    pub(super) fn from_routing(routing: &ClusterRouting) -> Self {
        let mut ranges: Vec<(u16, u16, Server)> =
            routing.slots().iter().map(|range| (range.start, range.end, range.primary.clone())).collect();
        ranges.sort_by_key(|(start, _, _)| *start);
        Self { ranges }
    }

    /// The primary owning `slot`, if the cluster assigned it.
    pub(super) fn owner(&self, slot: u16) -> Option<&Server> {
        let at = self.ranges.partition_point(|(start, _, _)| *start <= slot).checked_sub(1)?;
        let (_, end, primary) = &self.ranges[at];
        (slot <= *end).then_some(primary)
    }

    /// The primary owning `redis_channel`'s slot.
    pub(in crate::source::redis) fn owner_of(&self, redis_channel: &str) -> Option<&Server> {
        self.owner(slot_of(redis_channel))
    }

    /// Every primary owning at least one slot.
    pub(in crate::source::redis) fn primaries(&self) -> BTreeSet<Server> {
        self.ranges.iter().map(|(_, _, primary)| primary.clone()).collect()
    }

    /// A canary channel (`{n}<suffix>`: the hash tag picks the slot) whose slot `primary` owns.
    pub(super) fn canary_channel(&self, suffix: &str, primary: &Server) -> Option<String> {
        // A primary owning a third of the slots is found within a few tries; one owning a
        // single slot within about 16k (CRC16 of a short string each: well under a millisecond).
        (0..200_000u32).map(|n| format!("{{{n}}}{suffix}")).find(|name| self.owner_of(name) == Some(primary))
    }
}

/// Reads the slot map with `CLUSTER SLOTS` over a connection of the hub's own to one node (a
/// primary of the last map, else a seed of `REDIS_URL`), kept while it answers and moved to the
/// next candidate when it does not. The publisher's cluster client has a view of its own, but it
/// was seen stuck on a slot map from before a migration: this one is read fresh every round.
pub(super) struct MapReader {
    base: Config,
    client: Option<(Server, Client)>,
}

impl MapReader {
    pub(super) fn new(base: Config) -> Self {
        Self { base, client: None }
    }

    /// The current slot map; `primaries` are the last map's, `turn` picks where to start.
    pub(super) async fn read(&mut self, primaries: &[Server], turn: usize) -> Option<SlotMap> {
        let mut candidates: Vec<Server> = primaries.to_vec();
        if let ServerConfig::Clustered { hosts, .. } = &self.base.server {
            candidates.extend(hosts.iter().cloned());
        }
        for attempt in 0..=candidates.len() {
            if self.client.is_none() {
                let server = candidates.get((turn + attempt) % candidates.len().max(1))?.clone();
                self.client = self.connect(server).await;
            }
            let Some((server, client)) = &self.client else { continue };
            let ask = client
                .custom::<Value, &str>(fred::types::CustomCommand::new_static("CLUSTER", None, false), vec!["SLOTS"]);
            match command(ask).await.map(|reply| ClusterRouting::from_cluster_slots(reply, server.host.clone())) {
                Ok(Ok(routing)) if !routing.slots().is_empty() => return Some(SlotMap::from_routing(&routing)),
                _ => {
                    if let Some((_, client)) = self.client.take() {
                        tokio::spawn(async move { command(client.quit()).await });
                    }
                }
            }
        }
        None
    }

    /// A plain connection to `server` (no reconnects: a node that stops answering is replaced
    /// by the next candidate).
    async fn connect(&self, server: Server) -> Option<(Server, Client)> {
        let client = Builder::from_config(node_config(&self.base, &server))
            .with_connection_config(|connection| {
                connection.connection_timeout = COMMAND_TIMEOUT;
                connection.internal_command_timeout = COMMAND_TIMEOUT;
            })
            .with_performance_config(|performance| performance.default_command_timeout = COMMAND_TIMEOUT)
            .build()
            .ok()?;
        match command(client.init()).await {
            Ok(_) => Some((server, client)),
            Err(error) => {
                tracing::debug!(node = %server, %error, "cannot read the slot map from this node");
                tokio::spawn(async move { command(client.quit()).await });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16) -> Server {
        Server::new("127.0.0.1", port)
    }

    fn three_primaries() -> SlotMap {
        SlotMap { ranges: vec![(0, 5460, server(7000)), (5461, 10922, server(7001)), (10923, 16383, server(7002))] }
    }

    #[test]
    fn owners_follow_the_ranges() {
        let map = three_primaries();
        assert_eq!(map.owner(0), Some(&server(7000)));
        assert_eq!(map.owner(5460), Some(&server(7000)));
        assert_eq!(map.owner(5461), Some(&server(7001)));
        assert_eq!(map.owner(16383), Some(&server(7002)));
        let holey = SlotMap { ranges: vec![(0, 99, server(7000)), (200, 16383, server(7001))] };
        assert_eq!(holey.owner(150), None);
        assert_eq!(holey.owner(200), Some(&server(7001)));
    }

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
        assert_eq!(slot_of("mt:builds"), slot_of("{mt:builds}"));
    }

    #[test]
    fn each_primary_gets_a_canary_in_its_own_slots() {
        let map = three_primaries();
        for primary in map.primaries() {
            let canary = map.canary_channel("mt:!canary.1.2", &primary).unwrap();
            assert!(canary.ends_with("mt:!canary.1.2"), "{canary}");
            assert_eq!(map.owner_of(&canary), Some(&primary));
        }
        let one_slot = SlotMap { ranges: vec![(0, 16382, server(7000)), (16383, 16383, server(7001))] };
        let canary = one_slot.canary_channel("x", &server(7001)).unwrap();
        assert_eq!(slot_of(&canary), 16383);
    }
}
