//! Resume: replays a channel's history after a client's last id, then hands the subscription
//! over to live delivery with no gap and no duplicate (the seam is [`Hub::finish_recovery`]).
//!
//! One task per `subscribe` (or connect) that asks to resume; it replays its channels one
//! after the other:
//!
//! 1. the subscription is already registered as *recovering*, so live events are kept for it;
//! 2. wait until the source delivers the channel (Redis confirmed the SUBSCRIBE), so every
//!    event published from now on is either in what history returns or in what is kept;
//! 3. read history in pages ([`PAGE`]: at most 64 KiB, or one event if larger) after the id,
//!    each event queued only once the client's queue has room (at most [`REPLAY_QUEUE_BYTES`]
//!    of replay queued; a huge backlog costs one page of memory and never overflows the
//!    queue), at most [`MAX_CONCURRENT_READS`] reads per pod at once. A read Redis answers
//!    with an error (a key that is not a stream) ends the replay at once, a read that fails
//!    (Redis down) is retried [`MAX_READ_ATTEMPTS`] times: either way the client gets
//!    `recovered: false` with the reason and goes live; an unsubscribe stops the resume;
//! 4. finish: the kept live events newer than the replay, the `recovered` notice, then live.
//!    If more live events arrived than the queue cap allows, they were dropped and step 3
//!    continues from where the replay stopped (history has them); after [`MAX_ROUNDS`] the
//!    client cannot keep up and is closed as a slow consumer (4008), and resumes again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::event_id::EventId;
use crate::history::{History, PageLimit, Read};
use crate::hub::{Client, Finish, Hub};
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName, RecoveryOutcome, ResumeFailure};

/// One history read: at most 100 events and 64 KiB of payload (or one event, if larger). A
/// resume holds one page while its client drains, so this bounds what a stalled client costs.
pub const PAGE: PageLimit = PageLimit { events: 100, bytes: 64 << 10 };
/// Failed reads of history a resume tries (0.5 s apart) before it gives up with
/// `recovered: false` ("history unavailable") and goes live.
pub const MAX_READ_ATTEMPTS: u32 = 20;
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

/// Why a resume of one channel stopped before its `recovered` notice.
enum Stop {
    /// The connection is closing: every resume of it stops.
    Closed,
    /// The client unsubscribed this channel: the connection's other resumes go on.
    Unsubscribed,
}

impl Recovery {
    pub fn new(history: History) -> Arc<Self> {
        Arc::new(Self { history, reads: Semaphore::new(MAX_CONCURRENT_READS) })
    }

    /// Resumes each `(channel, since)` of a connection, in order. The channels must already be
    /// subscribed as recovering ([`Hub::subscribe`] with them in `resume`).
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, client: Arc<Client>, requests: Vec<(ChannelName, EventId)>) {
        for (channel, since) in requests {
            match self.resume(&hub, &client, &channel, since).await {
                Ok(()) | Err(Stop::Unsubscribed) => {}
                Err(Stop::Closed) => return,
            }
        }
    }

    async fn resume(&self, hub: &Hub, client: &Arc<Client>, channel: &ChannelName, since: EventId) -> Result<(), Stop> {
        let conflate = hub.policies().conflates(channel);
        let mut cursor = since;
        let mut replayed: u64 = 0;
        let mut outcome: RecoveryOutcome = Ok(());
        let mut first_read = true;
        for _round in 0..MAX_ROUNDS {
            while !hub.wait_live(channel, RECHECK).await {
                still_wanted(hub, client, channel)?;
            }
            loop {
                let page = match self.read(hub, client, channel, cursor).await? {
                    Some(Read::Page(page)) => page,
                    Some(Read::NoStream) => {
                        if first_read {
                            outcome = Err(ResumeFailure::Expired);
                        }
                        break;
                    }
                    Some(Read::Unreadable(why)) => {
                        tracing::warn!(%channel, why, "history of this channel cannot be read; resuming without it");
                        outcome = Err(ResumeFailure::Unreadable);
                        break;
                    }
                    None => {
                        tracing::warn!(%channel, attempts = MAX_READ_ATTEMPTS, "history unavailable; resuming without it");
                        outcome = Err(ResumeFailure::Unavailable);
                        break;
                    }
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
                let more = page.may_have_more();
                hub.metrics.history_replayed.inc_by(page.entries.len() as u64);
                for (id, payload) in page.entries {
                    let mut id_text = [0u8; crate::event_id::MAX_ID_LEN];
                    let frame = protocol::encode_event(channel, id.write(&mut id_text), &payload);
                    wait_for_room(hub, client, channel, frame.len()).await?;
                    client.outbound.push(&Event::delivery(frame, Instant::now(), channel.clone(), id, conflate));
                    cursor = id;
                    replayed += 1;
                }
                if !more {
                    break;
                }
            }
            first_read = false;
            // Without history to compare with, every live event held meanwhile is newer than
            // what the client has: hand them all over (finishing at the client's own id could
            // hold back, for good, live events older than a bogus id).
            let without_history =
                matches!(outcome, Err(ResumeFailure::Expired | ResumeFailure::Unreadable | ResumeFailure::Unavailable));
            let finish_at = if without_history && replayed == 0 { EventId::default() } else { cursor };
            let finish = hub.finish_recovery(client, channel, finish_at, |handed_over| {
                protocol::encode_recovered(channel, since, replayed + handed_over, outcome)
            });
            match finish {
                Finish::Live { .. } => {
                    hub.metrics.resumed(outcome);
                    return Ok(());
                }
                Finish::Gone => return Err(stop_reason(client)),
                Finish::ReadMore => {}
            }
        }
        tracing::info!(client = client.id.0, %channel, "resume cannot keep up with live events; closing with 4008");
        client.outbound.close(Close::SlowConsumer);
        Err(Stop::Closed)
    }

    /// One page, retried every [`RETRY`] while history cannot be read, at most
    /// [`MAX_READ_ATTEMPTS`] times; `None` when it gave up.
    async fn read(
        &self,
        hub: &Hub,
        client: &Client,
        channel: &ChannelName,
        cursor: EventId,
    ) -> Result<Option<Read>, Stop> {
        let mut attempts = 0;
        let keep_trying = || {
            attempts += 1;
            attempts < MAX_READ_ATTEMPTS && still_wanted(hub, client, channel).is_ok()
        };
        let read = read_page(&self.history, hub, channel, cursor, Some(&self.reads), keep_trying).await;
        if read.is_none() {
            still_wanted(hub, client, channel)?;
        }
        Ok(read)
    }
}

/// `Ok` while the connection is open and still resuming `channel`.
fn still_wanted(hub: &Hub, client: &Client, channel: &ChannelName) -> Result<(), Stop> {
    if client.outbound.close_reason().is_some() {
        return Err(Stop::Closed);
    }
    if !hub.is_recovering(client.id, channel) {
        return Err(Stop::Unsubscribed);
    }
    Ok(())
}

/// Why a subscription is gone: the connection closed, or only this channel was unsubscribed.
fn stop_reason(client: &Client) -> Stop {
    match client.outbound.close_reason() {
        Some(_) => Stop::Closed,
        None => Stop::Unsubscribed,
    }
}

/// One page of history after `cursor`, retried every [`RETRY`] while it cannot be read and
/// `keep_trying` agrees (asked after each failure); `None` once it does not. With `permits`,
/// each attempt holds one. The first failure is logged as a warning, the retries at debug.
async fn read_page(
    history: &History,
    hub: &Hub,
    channel: &ChannelName,
    cursor: EventId,
    permits: Option<&Semaphore>,
    mut keep_trying: impl FnMut() -> bool,
) -> Option<Read> {
    let mut failures = 0u32;
    loop {
        let result = {
            let _permit = match permits {
                Some(permits) => Some(permits.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            history.read_after(channel, cursor, PAGE).await
        };
        match result {
            Ok(read) => return Some(read),
            Err(error) => {
                hub.metrics.history_errors.inc();
                failures += 1;
                if !keep_trying() {
                    return None;
                }
                if failures == 1 {
                    tracing::warn!(%error, %channel, "history read failed; retrying");
                } else {
                    tracing::debug!(%error, %channel, failures, "history read failed again");
                }
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
            Some(events) => tracing::info!(%channel, events, "caught up from history after a reconnect or a lag"),
            None => {
                hub.abandon_catch_up(&channel);
                tracing::warn!(%channel, "could not catch up from history; events may be missing");
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
                Read::Unreadable(why) => {
                    tracing::warn!(%channel, why, "history of this channel cannot be read");
                    return None;
                }
            };
            let more = page.may_have_more();
            hub.metrics.history_replayed.inc_by(page.entries.len() as u64);
            for (id, payload) in page.entries {
                hub.fan_out_caught_up(channel, id, &payload);
                cursor = id;
                replayed += 1;
            }
            if !more {
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

/// Waits until the client's queue can take `len` more bytes of replay: replay may fill
/// [`REPLAY_QUEUE_BYTES`] and at most half the queue, so live events of its other channels
/// still fit.
async fn wait_for_room(hub: &Hub, client: &Client, channel: &ChannelName, len: usize) -> Result<(), Stop> {
    let half = (client.outbound.cap() / 2).min(REPLAY_QUEUE_BYTES);
    loop {
        still_wanted(hub, client, channel)?;
        if client.outbound.wait_for_room(|queued| queued == 0 || queued + len <= half, RECHECK).await {
            return Ok(());
        }
    }
}
