//! A connection as the hub sees it: its outbound queue, the channels it listens to, and when
//! its peer last sent anything. The socket side of the same connection is `crate::session`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Hub;
use crate::lock::lock;
use crate::outbound::Outbound;
use crate::protocol::ChannelName;

/// Identifies a connection for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

/// One connection as the hub sees it.
pub struct Client {
    pub id: ClientId,
    /// Frames waiting for this connection's writer; pushed to by the fan-out and the reader.
    pub outbound: Outbound,
    started: Instant,
    /// Nanoseconds after `started` when the peer last sent anything (reader writes, writer reads).
    last_seen_ns: AtomicU64,
    /// Channels this connection listens to; changed by its reader, emptied at clean-up. The
    /// first lock of the hub's lock order (see `crate::hub`).
    pub(super) channels: Mutex<ClientChannels>,
}

#[derive(Default)]
pub(super) struct ClientChannels {
    pub list: Vec<ChannelName>,
    /// Set by [`Hub::close_client`]: a subscribe that races with clean-up (a reader not yet
    /// stopped) must not re-register a finished connection.
    pub closed: bool,
}

impl Client {
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

impl Hub {
    /// Registers a new connection.
    pub fn open_client(&self) -> Arc<Client> {
        let id = ClientId(self.next_client.fetch_add(1, Ordering::Relaxed));
        let client = Arc::new(Client {
            id,
            outbound: Outbound::new(
                self.budget.queue_cap_per_connection().bytes() as usize,
                self.metrics.queued_bytes.clone(),
            )
            .counting_slow_consumers(self.metrics.slow_consumer_disconnects.clone())
            .counting_full_sockets(self.metrics.sockets_full.clone()),
            started: Instant::now(),
            last_seen_ns: AtomicU64::new(0),
            channels: Mutex::new(ClientChannels::default()),
        });
        self.clients.insert(id, Arc::clone(&client));
        client
    }

    /// Removes a finished connection from every channel and from the registry.
    pub fn close_client(&self, client: &Arc<Client>) {
        let channels = {
            let mut mine = lock(&client.channels);
            mine.closed = true;
            std::mem::take(&mut mine.list)
        };
        for channel in &channels {
            self.remove_subscriber(channel, client.id);
        }
        self.clients.remove(&client.id);
    }

    /// Every open connection (for the shutdown drain).
    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.clients.iter().map(|entry| Arc::clone(entry.value())).collect()
    }
}
