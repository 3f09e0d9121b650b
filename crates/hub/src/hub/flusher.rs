//! The flusher: writes what the fan-out queued for connections whose writer is idle, from one
//! task per runtime worker, so a delivery costs a push and its share of one write instead of a
//! wake-up of the connection's own task (most of a delivery's cost at low rates, measured in
//! BENCHMARKS.md).
//!
//! The fan-out puts a connection on a flusher's list when its queue goes from empty to not
//! empty ([`crate::outbound::Outbound::push_for_flusher`]); the flusher takes the whole list,
//! flushes each queue with non-blocking writes, and hands a connection whose socket is full (or
//! failing) to its writer task, which waits for the socket and writes everything that queued up
//! meanwhile. Under load, frames pile up per connection while the flusher works through its
//! list, and leave many per write: batching needs no timer and adds no delay. The flusher
//! yields to the runtime every [`YIELD_EVERY`] connections, so publishes, readers, heartbeats
//! and probes are not held up by a long fan-out.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use super::client::Client;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::outbound::{FlushStats, Flushed};

/// Flushes per clock read for the delivery-lag metric: at most ~8 writes (tens of µs) off,
/// under the histogram's first bucket (50 µs), for an eighth of the clock reads.
const CLOCK_EVERY: usize = 8;

/// Connections flushed between yields to the runtime. A yielded task runs again only after the
/// runtime has polled for I/O, so publishes and client frames are seen at least this often (as
/// when each connection's own task wrote: tokio polls for I/O every 61 task polls). Tokio's
/// cooperative budget (128 per poll) would yield too, but without that I/O poll in between.
const YIELD_EVERY: usize = 64;

/// One flusher's list of connections to write to, and its wake-up.
#[derive(Default)]
struct Shard {
    ready: Mutex<Vec<Arc<Client>>>,
    wake: Notify,
}

/// The flusher tasks, started on first use (in the runtime that serves the connections).
#[derive(Default)]
pub struct Flushers {
    shards: OnceLock<Box<[Arc<Shard>]>>,
}

impl Flushers {
    /// Puts `client` on its flusher's list.
    pub(super) fn schedule(&self, client: &Arc<Client>, metrics: &Metrics) {
        let shards = self.shards.get_or_init(|| start(metrics));
        let shard = &shards[client.id.0 as usize % shards.len()];
        let mut ready = lock(&shard.ready);
        let first = ready.is_empty();
        ready.push(Arc::clone(client));
        drop(ready);
        if first {
            shard.wake.notify_one();
        }
    }
}

/// One flusher per runtime worker, so writes spread over the pod's cores as the connections'
/// own tasks did.
fn start(metrics: &Metrics) -> Box<[Arc<Shard>]> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers().max(1);
    (0..workers)
        .map(|_| {
            let shard = Arc::new(Shard::default());
            tokio::spawn(run(Arc::clone(&shard), metrics.clone()));
            shard
        })
        .collect()
}

async fn run(shard: Arc<Shard>, metrics: Metrics) {
    let mut clients = Vec::new();
    loop {
        std::mem::swap(&mut clients, &mut *lock(&shard.ready));
        if clients.is_empty() {
            shard.wake.notified().await;
            continue;
        }
        let mut now = Instant::now();
        for (at, client) in clients.drain(..).enumerate() {
            if at % CLOCK_EVERY == 0 {
                now = Instant::now();
            }
            let mut stats = FlushStats::default();
            match client.outbound.flush(&mut stats) {
                Flushed::Empty | Flushed::Closing(_) => {}
                // Its writer waits for the socket (or ends the connection).
                Flushed::Blocked | Flushed::Failed => client.outbound.wake_writer(),
            }
            metrics.record_flush(&stats, now);
            if at % YIELD_EVERY == YIELD_EVERY - 1 {
                // Lets the runtime look for I/O (the next publish, readers) and run other tasks.
                tokio::task::yield_now().await;
            }
        }
        if clients.capacity() > 4096 {
            clients = Vec::new();
        }
    }
}
