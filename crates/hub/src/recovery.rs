//! Resume: replays a channel's history after a client's last id, then hands the subscription
//! over to live delivery with no gap and no duplicate (the seam is [`Hub::finish_recovery`]).
//!
//! One task per `subscribe` (or connect) that asks to resume; it replays its channels one
//! after the other:
//!
//! 1. the subscription is already registered as *recovering*, so live events are kept for it;
//! 2. wait until the source delivers the channel (Redis confirmed the SUBSCRIBE), so every
//!    event published from now on is either in what history returns or in what is kept;
//! 3. read history in pages of [`PAGE_SIZE`] after the id, each event queued only once the
//!    client's queue has room (at most [`REPLAY_QUEUE_BYTES`] of replay queued; a huge backlog
//!    costs one page of memory and never overflows the queue),
//!    at most [`MAX_CONCURRENT_READS`] reads per pod at once;
//! 4. finish: the kept live events newer than the replay, the `recovered` notice, then live.
//!    If more live events arrived than the queue cap allows, they were dropped and step 3
//!    continues from where the replay stopped (history has them); after [`MAX_ROUNDS`] the
//!    client cannot keep up and is closed as a slow consumer (4008), and resumes again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::event_id::EventId;
use crate::history::{History, Read};
use crate::hub::{Client, Finish, Hub};
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName, RecoveryOutcome, ResumeFailure};

/// Events per history read.
pub const PAGE_SIZE: usize = 100;
/// History reads in flight per pod.
pub const MAX_CONCURRENT_READS: usize = 32;
/// Replay rounds before a client that cannot keep up is closed.
pub const MAX_ROUNDS: u32 = 8;
/// Wait between attempts while history cannot be read (Redis down).
const RETRY: Duration = Duration::from_millis(500);
/// Longest single wait before re-checking whether the connection is still open.
const RECHECK: Duration = Duration::from_secs(1);
/// Replayed bytes a client's queue may hold at once (at most half its cap): enough to keep its
/// socket busy, small enough that 1000 clients resuming together queue ~32 MiB, not the budget.
pub const REPLAY_QUEUE_BYTES: usize = 32 << 10;

/// The resume service of a hub.
pub struct Recovery {
    history: History,
    reads: Semaphore,
}

/// The connection closed (or unsubscribed) while a resume waited.
struct Abandoned;

impl Recovery {
    pub fn new(history: History) -> Arc<Self> {
        Arc::new(Self { history, reads: Semaphore::new(MAX_CONCURRENT_READS) })
    }

    /// Resumes each `(channel, since)` of a connection, in order. The channels must already be
    /// subscribed as recovering ([`Hub::subscribe`] with them in `resume`).
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, client: Arc<Client>, requests: Vec<(ChannelName, EventId)>) {
        for (channel, since) in requests {
            if self.resume(&hub, &client, &channel, since).await.is_err() {
                return;
            }
        }
    }

    async fn resume(
        &self,
        hub: &Hub,
        client: &Arc<Client>,
        channel: &ChannelName,
        since: EventId,
    ) -> Result<(), Abandoned> {
        let conflate = hub.policies().conflates(channel);
        let mut cursor = since;
        let mut replayed: u64 = 0;
        let mut outcome: RecoveryOutcome = Ok(());
        let mut first_read = true;
        for _round in 0..MAX_ROUNDS {
            while !hub.wait_live(channel, RECHECK).await {
                check_open(client)?;
                if !hub.is_recovering(client.id, channel) {
                    return Ok(()); // unsubscribed meanwhile
                }
            }
            loop {
                let read = self.read(hub, client, channel, cursor).await?;
                let page = match read {
                    Read::NoStream => {
                        if first_read {
                            outcome = Err(ResumeFailure::Expired);
                        }
                        break;
                    }
                    Read::Page(page) => page,
                };
                if first_read && since > page.last_id {
                    outcome = Err(ResumeFailure::UnknownId);
                    cursor = page.last_id;
                    break;
                }
                first_read = false;
                if cursor < page.max_deleted {
                    outcome = Err(ResumeFailure::Truncated);
                }
                let full = page.entries.len() == PAGE_SIZE;
                hub.metrics.history_replayed.inc_by(page.entries.len() as u64);
                for (id, payload) in page.entries {
                    let mut id_text = [0u8; crate::event_id::MAX_ID_LEN];
                    let frame = protocol::encode_event(channel, id.write(&mut id_text), &payload);
                    wait_for_room(client, frame.len()).await?;
                    client.outbound.push(&Event::delivery(frame, Instant::now(), channel.clone(), id, conflate));
                    cursor = id;
                    replayed += 1;
                }
                if !full {
                    break;
                }
            }
            first_read = false;
            let finish = hub.finish_recovery(client, channel, cursor, |handed_over| {
                protocol::encode_recovered(channel, since, replayed + handed_over, outcome)
            });
            match finish {
                Finish::Live { .. } => {
                    hub.metrics.resumed(outcome);
                    return Ok(());
                }
                Finish::Gone => return Err(Abandoned),
                Finish::ReadMore => {}
            }
        }
        tracing::info!(client = client.id.0, %channel, "resume cannot keep up with live events; closing with 4008");
        hub.metrics.slow_consumer_disconnects.inc();
        client.outbound.close(Close::SlowConsumer);
        Err(Abandoned)
    }

    /// One page, retried while history cannot be read and the connection is open.
    async fn read(
        &self,
        hub: &Hub,
        client: &Client,
        channel: &ChannelName,
        cursor: EventId,
    ) -> Result<Read, Abandoned> {
        let open = || client.outbound.close_reason().is_none();
        read_page(&self.history, hub, channel, cursor, Some(&self.reads), open).await.ok_or(Abandoned)
    }
}

/// One page of history after `cursor`, retried every [`RETRY`] while it cannot be read and
/// `keep_trying` agrees (asked after each failure); `None` once it does not. With `permits`,
/// each attempt holds one.
async fn read_page(
    history: &History,
    hub: &Hub,
    channel: &ChannelName,
    cursor: EventId,
    permits: Option<&Semaphore>,
    mut keep_trying: impl FnMut() -> bool,
) -> Option<Read> {
    loop {
        let result = {
            let _permit = match permits {
                Some(permits) => Some(permits.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            history.read_after(channel, cursor, PAGE_SIZE).await
        };
        match result {
            Ok(read) => return Some(read),
            Err(error) => {
                hub.metrics.history_errors.inc();
                if !keep_trying() {
                    return None;
                }
                tracing::warn!(%error, %channel, "history read failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Catches up channels whose source reconnected ([`Hub::begin_catch_up`] already holds their
/// live events back): fans out, in order, what history has after each channel's last seen id,
/// then lets the channel go live with no gap and no duplicate. Gives a channel up (its held
/// events go out as they are) after [`MAX_ROUNDS`] rounds or when history stays unreadable
/// for [`MAX_CATCH_UP_ATTEMPTS`] attempts.
pub async fn catch_up(history: History, hub: Arc<Hub>, channels: Vec<(ChannelName, EventId)>) {
    for (channel, from) in channels {
        let replayed = catch_up_channel(&history, &hub, &channel, from).await;
        match replayed {
            Some(events) => tracing::info!(%channel, events, "caught up after the source reconnected"),
            None => {
                hub.abandon_catch_up(&channel);
                tracing::warn!(%channel, "could not catch up after the source reconnected; events may be missing");
            }
        }
    }
}

/// Failed reads of history a catch-up tries before giving up (0.5 s apart).
pub const MAX_CATCH_UP_ATTEMPTS: u32 = 20;

/// One channel's catch-up; `None` when it had to give up.
async fn catch_up_channel(history: &History, hub: &Hub, channel: &ChannelName, from: EventId) -> Option<u64> {
    let mut cursor = from;
    let mut replayed = 0u64;
    let mut failures = 0;
    let mut keep_trying = || {
        failures += 1;
        failures < MAX_CATCH_UP_ATTEMPTS
    };
    for _round in 0..MAX_ROUNDS {
        loop {
            let page = match read_page(history, hub, channel, cursor, None, &mut keep_trying).await? {
                Read::Page(page) => page,
                Read::NoStream => break,
            };
            let full = page.entries.len() == PAGE_SIZE;
            hub.metrics.history_replayed.inc_by(page.entries.len() as u64);
            for (id, payload) in page.entries {
                hub.fan_out_caught_up(channel, id, &payload);
                cursor = id;
                replayed += 1;
            }
            if !full {
                break;
            }
        }
        match hub.finish_catch_up(channel, cursor) {
            Finish::Live { .. } | Finish::Gone => return Some(replayed),
            Finish::ReadMore => {}
        }
    }
    None
}

fn check_open(client: &Client) -> Result<(), Abandoned> {
    match client.outbound.close_reason() {
        Some(_) => Err(Abandoned),
        None => Ok(()),
    }
}

/// Waits until the client's queue can take `len` more bytes of replay: replay may fill
/// [`REPLAY_QUEUE_BYTES`] and at most half the queue, so live events of its other channels
/// still fit.
async fn wait_for_room(client: &Client, len: usize) -> Result<(), Abandoned> {
    let half = (client.outbound.cap() / 2).min(REPLAY_QUEUE_BYTES);
    loop {
        check_open(client)?;
        if client.outbound.wait_for_room(|queued| queued == 0 || queued + len <= half, RECHECK).await {
            return Ok(());
        }
    }
}
