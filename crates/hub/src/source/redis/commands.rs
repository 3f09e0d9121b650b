//! Where the hub's Redis commands (publishes, history reads, canaries) go: the one server's
//! connection, or, on a cluster, a plain connection to the primary owning the key's slot in
//! the hub's own slot map ([`ClusterRouter`]).
//!
//! Why not the client library's cluster mode: with fred 10.1, a command answered `MOVED` right
//! after a slot migration, in a cluster that also had a dead node, left its cluster client
//! timing out every command from then on (seen in about one run in eight of
//! `tests/redis_ha`); a reconnect did not bring it back. The hub already reads the slot map
//! every second for its subscriptions, so it routes its commands by that map too: a `MOVED`
//! answer fails that one command and makes the map be read again at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use fred::error::{Error, ErrorKind};
use fred::prelude::*;
use fred::types::config::{Config, Server, ServerConfig};
use tokio::sync::Notify;

use super::cluster::SlotMap;
use super::{build_client, COMMAND_TIMEOUT};
use crate::lock::lock;

/// The connection(s) commands go over.
#[derive(Clone)]
pub enum Commands {
    Single(Client),
    Cluster(Arc<ClusterRouter>),
}

impl Commands {
    /// The connection for a command on `key` (a stream key or a shard channel).
    pub fn for_key(&self, key: &str) -> Result<Client, Error> {
        match self {
            Self::Single(client) => Ok(client.clone()),
            Self::Cluster(router) => router.client_for(key),
        }
    }

    /// Sharded pub/sub (SPUBLISH) rather than PUBLISH.
    pub fn sharded(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Follows up a command that failed on `client`: a redirection means the slot map is
    /// stale (the cluster task reads it again at once); READONLY, that the server is a replica.
    pub fn after_error(&self, client: &Client, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        reconnect_if_replica(client, &text);
        if let Self::Cluster(router) = self {
            if ["MOVED ", "ASK ", "CLUSTERDOWN", "slot map"].iter().any(|sign| text.contains(sign)) {
                router.stale.notify_one();
            }
        }
    }

    /// Closes every connection.
    pub async fn quit(&self) {
        let clients = match self {
            Self::Single(client) => vec![client.clone()],
            Self::Cluster(router) => lock(&router.nodes).drain().map(|(_, client)| client).collect(),
        };
        for client in clients {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await;
        }
    }
}

/// A write answered READONLY went to a server that is a replica now (a Sentinel failover
/// demoted it while the connection stayed up): the connection reconnects, which asks the
/// Sentinels for the primary again.
pub(super) fn reconnect_if_replica(client: &Client, error: &str) {
    if error.contains("READONLY") {
        tracing::warn!("redis command connection reached a replica (READONLY); reconnecting it");
        let client = client.clone();
        tokio::spawn(async move { tokio::time::timeout(COMMAND_TIMEOUT, client.force_reconnection()).await });
    }
}

/// The cluster's client configuration (credentials, TLS, timeouts) pointed at one node alone.
pub(super) fn node_config(base: &Config, server: &Server) -> Config {
    let mut config = base.clone();
    config.server = ServerConfig::Centralized { server: server.clone() };
    config
}

/// Routes cluster commands by the hub's slot map over one plain connection per primary.
pub struct ClusterRouter {
    base: Config,
    map: RwLock<Option<SlotMap>>,
    nodes: Mutex<HashMap<Server, Client>>,
    /// Woken when a command met a redirection: the subscriptions task reads the map again.
    pub(super) stale: Notify,
}

impl ClusterRouter {
    pub(super) fn new(base: Config) -> Arc<Self> {
        Arc::new(Self { base, map: RwLock::new(None), nodes: Mutex::new(HashMap::new()), stale: Notify::new() })
    }

    /// The connection to the primary owning `key`'s slot (opened on first use; fred queues
    /// commands until it is up, and reconnects it after a drop).
    pub(super) fn client_for(&self, key: &str) -> Result<Client, Error> {
        let owner = {
            let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let map = map
                .as_ref()
                .ok_or_else(|| Error::new(ErrorKind::Cluster, "the cluster's slot map is not known yet"))?;
            map.owner_of(key)
                .cloned()
                .ok_or_else(|| Error::new(ErrorKind::Cluster, "no primary owns the key's slot in the slot map"))?
        };
        let mut nodes = lock(&self.nodes);
        if let Some(client) = nodes.get(&owner) {
            return Ok(client.clone());
        }
        let client = build_client(&node_config(&self.base, &owner))?;
        client.connect();
        nodes.insert(owner, client.clone());
        Ok(client)
    }

    /// Takes a new slot map; connections to nodes that are no longer primaries are closed.
    pub(super) fn set_map(&self, map: SlotMap) {
        let primaries = map.primaries();
        *self.map.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(map);
        let gone: Vec<Client> = {
            let mut nodes = lock(&self.nodes);
            let servers: Vec<Server> = nodes.keys().filter(|s| !primaries.contains(*s)).cloned().collect();
            servers.iter().filter_map(|server| nodes.remove(server)).collect()
        };
        for client in gone {
            tokio::spawn(async move { tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await });
        }
    }
}
