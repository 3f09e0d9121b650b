//! One WebSocket connection after the upgrade: a reader task and a writer, and the one rule for
//! when the connection ends.
//!
//! - The **reader** (its own task, so a partly read frame is never dropped by a `select!`)
//!   reads client frames ([`crate::inbound`]), applies subscribe/unsubscribe, answers pings, and on a bad frame
//!   either answers with an `error` message or, for protocol-level faults, marks the
//!   connection for closing.
//! - The **writer** (the session task itself) drains the outbound queue in batches and writes
//!   each batch with vectored writes, sends jittered pings, and enforces the heartbeat timeout.
//!
//! **The rule:** the connection ends when its outbound queue is marked closed (by the reader,
//! a slow-consumer push, the heartbeat, or the drain). The writer then finishes the frame it
//! was in the middle of, for a drain or slow-consumer close sends the `closing` notice with the
//! last event id it wrote per channel, writes the close frame (all bounded by
//! [`CLOSE_WRITE_TIMEOUT`]), shuts the socket, gives the reader [`CLOSE_READ_GRACE`] to see the
//! peer's answer, and cleans up.
//!
//! A `subscribe` with `since` (or `?since=`) starts a resume task (`crate::recovery`) for the
//! channels that keep history; the others are answered at once with `recovered: false`.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::event_id::EventId;
use crate::hub::{Hub, Session};
use crate::inbound::{ClientFrame, FrameReader, ReadError};
use crate::metrics::CloseReason;
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName, ClientMessage, ConnectQuery, RequestError};
use crate::recovery::{self, Recovery};
use crate::wire::{self, CloseCode};

/// Longest the writer tries to get the final frames out to a peer that does not read.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reader may wait for the peer's close answer after ours went out.
pub const CLOSE_READ_GRACE: Duration = Duration::from_secs(2);
/// Bad requests a connection may make before it is closed with 1008.
pub const MAX_BAD_REQUESTS: u32 = 32;
/// Frames per vectored write call (well under IOV_MAX).
const SLICES_PER_WRITE: usize = 64;

/// Runs a connection to its end. `leftover` holds bytes hyper read past the upgrade request.
pub async fn run(hub: Arc<Hub>, recovery: Arc<Recovery>, stream: TcpStream, leftover: Bytes, query: ConnectQuery) {
    let session = hub.open_session();
    session.touch();
    if !query.channels.is_empty() {
        let since: Vec<(ChannelName, EventId)> = match query.since {
            Some(id) => query.channels.iter().map(|c| (c.clone(), id)).collect(),
            None => Vec::new(),
        };
        if let Err(error) = subscribe(&hub, &recovery, &session, &query.channels, since) {
            reject(&hub, &session, &error);
        }
    }
    let (read_half, write_half) = stream.into_split();
    let reader_input = std::io::Cursor::new(leftover).chain(read_half);
    let reader = tokio::spawn(read_loop(Arc::clone(&hub), recovery, Arc::clone(&session), reader_input));

    let cause = write_loop(&hub, &session, write_half, reader).await;
    hub.close_session(&session);
    hub.metrics.closed(cause);
    tracing::debug!(session = session.id.0, cause = cause.as_str(), "connection closed");
}

/// Subscribes, queues the `subscribed` reply, and starts resuming the channels in `since`
/// (used at connect time and by the reader). A channel without history is subscribed live and
/// told at once that it cannot be resumed.
fn subscribe(
    hub: &Arc<Hub>,
    recovery: &Arc<Recovery>,
    session: &Arc<Session>,
    channels: &[ChannelName],
    since: Vec<(ChannelName, EventId)>,
) -> Result<(), RequestError> {
    let (resumable, unresumable): (Vec<_>, Vec<_>) =
        since.into_iter().partition(|(channel, _)| hub.policies().keeps_history(channel));
    let resume: Vec<ChannelName> = resumable.iter().map(|(channel, _)| channel.clone()).collect();
    let recovering = hub.subscribe(session, channels, &resume)?;
    session.outbound.push(&Event::control(protocol::encode_subscribed(channels)));
    for (channel, id) in unresumable {
        session.outbound.push(&Event::control(protocol::encode_recovered(&channel, id, 0, Err(recovery::NO_HISTORY))));
        hub.metrics.resumed(recovery::outcome_label(recovery::NO_HISTORY));
    }
    let requests: Vec<(ChannelName, EventId)> =
        resumable.into_iter().filter(|(channel, _)| recovering.contains(channel)).collect();
    if !requests.is_empty() {
        tokio::spawn(Arc::clone(recovery).run(Arc::clone(hub), Arc::clone(session), requests));
    }
    Ok(())
}

fn reject(hub: &Hub, session: &Session, error: &RequestError) {
    hub.metrics.client_errors.inc();
    session.outbound.push(&Event::control(protocol::encode_error(error)));
}

// ---------------------------------------------------------------------------------------------
// Reader

async fn read_loop<R: AsyncRead + Unpin>(hub: Arc<Hub>, recovery: Arc<Recovery>, session: Arc<Session>, input: R) {
    let mut frames = FrameReader::new(input);
    let mut bad_requests = 0u32;
    loop {
        let frame = match frames.next().await {
            Ok(frame) => frame,
            Err(error) => {
                session.outbound.close(close_for_read_error(&error));
                return;
            }
        };
        session.touch();
        let outcome = match frame {
            ClientFrame::Text(text) => match ClientMessage::parse(&text) {
                Ok(ClientMessage::Subscribe { channels, since }) => {
                    subscribe(&hub, &recovery, &session, &channels, since)
                }
                Ok(ClientMessage::Unsubscribe(channels)) => {
                    hub.unsubscribe(&session, &channels);
                    session.outbound.push(&Event::control(protocol::encode_unsubscribed(&channels)));
                    Ok(())
                }
                Err(error) => Err(error),
            },
            ClientFrame::Binary => Err(RequestError::Binary),
            ClientFrame::Ping(payload) => {
                session.outbound.push(&Event::control(wire::frame(wire::OPCODE_PONG, &payload)));
                Ok(())
            }
            ClientFrame::Pong => Ok(()),
            ClientFrame::Close(code) => {
                session.outbound.close(peer_close(code));
                return;
            }
        };
        if let Err(error) = outcome {
            bad_requests += 1;
            reject(&hub, &session, &error);
            if bad_requests > MAX_BAD_REQUESTS {
                session.outbound.close(too_many_bad_requests());
                return;
            }
        }
    }
}

fn protocol_error(reason: &'static str) -> Close {
    Close::new(CloseCode::ProtocolError, reason, CloseReason::ProtocolError)
}

fn too_many_bad_requests() -> Close {
    Close::new(CloseCode::Policy, "too many bad requests", CloseReason::ProtocolError)
}

/// Our answer to the peer's close frame: echo its code (1000 when it gave none).
fn peer_close(code: Option<u16>) -> Close {
    let code = code.unwrap_or(CloseCode::Normal.as_u16());
    let code = match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => CloseCode::ProtocolError.as_u16(),
    };
    Close { code, reason: "", cause: CloseReason::Peer }
}

fn close_for_read_error(error: &ReadError) -> Close {
    match error {
        ReadError::TooBig => Close::new(CloseCode::TooBig, "message over 4 KiB", CloseReason::ProtocolError),
        ReadError::InvalidUtf8 => Close::new(CloseCode::InvalidPayload, "invalid UTF-8", CloseReason::ProtocolError),
        ReadError::Eof | ReadError::Io(_) => Close::new(CloseCode::Normal, "", CloseReason::Peer),
        ReadError::Protocol(reason) => protocol_error(reason),
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Where a batch write stopped.
enum WriteOutcome {
    Done,
    /// Closing was requested mid-batch; `partial` is the rest of a frame already begun.
    Interrupted {
        partial: Option<Bytes>,
    },
    Failed,
}

/// The heartbeat state of one connection.
struct Heartbeat {
    interval: Duration,
    next_ping: Instant,
    /// When the last unanswered ping went out.
    ping_sent: Option<Instant>,
    /// Per-connection pseudo-random state for the jitter.
    jitter_state: u64,
}

impl Heartbeat {
    fn new(interval: Duration, seed: u64) -> Self {
        let mut heartbeat = Self { interval, next_ping: Instant::now(), ping_sent: None, jitter_state: seed };
        // The first ping lands anywhere in [0.5, 1.5) intervals, so connections opened
        // together (a reconnect storm) never ping together.
        heartbeat.next_ping = Instant::now() + interval.mul_f64(0.5 + heartbeat.random_fraction());
        heartbeat
    }

    /// A number in [0, 1) (splitmix64).
    fn random_fraction(&mut self) -> f64 {
        self.jitter_state = self.jitter_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Called when `next_ping` is reached: closes a silent peer, else queues a ping.
    fn tick(&mut self, session: &Session) {
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            if Instant::from_std(session.last_seen()) < sent {
                session.outbound.close(Close::HEARTBEAT_TIMEOUT);
                return;
            }
        }
        session.outbound.push(&Event::control(wire::frame(wire::OPCODE_PING, b"")));
        self.ping_sent = Some(now);
        // ±10% per interval keeps phases from drifting back together.
        self.next_ping = now + self.interval.mul_f64(0.9 + 0.2 * self.random_fraction());
    }
}

/// The last event id written to this connection, per channel (told in the `closing` notice).
#[derive(Default)]
struct LastWritten(Vec<(ChannelName, EventId)>);

impl LastWritten {
    fn note(&mut self, event: &Event) {
        let Some((channel, id)) = event.delivery_id() else { return };
        match self.0.iter_mut().find(|(c, _)| c == channel) {
            Some(slot) => slot.1 = id,
            None => self.0.push((channel.clone(), id)),
        }
    }
}

async fn write_loop(
    hub: &Hub,
    session: &Arc<Session>,
    mut stream: OwnedWriteHalf,
    mut reader: tokio::task::JoinHandle<()>,
) -> CloseReason {
    let mut heartbeat = Heartbeat::new(hub.budget().heartbeat_interval, session.id.0);
    let mut batch: Vec<Arc<Event>> = Vec::new();
    let mut last_written = LastWritten::default();
    let close = loop {
        let drained = session.outbound.drain_into(&mut batch);
        if !batch.is_empty() {
            record_batch(hub, &batch, drained.bytes);
            let outcome = write_batch(&mut stream, &batch, session, &mut heartbeat, &mut last_written).await;
            batch.clear();
            if batch.capacity() > 256 {
                batch = Vec::new();
            }
            match outcome {
                WriteOutcome::Done => {}
                WriteOutcome::Failed => {
                    reader.abort();
                    return CloseReason::IoError;
                }
                WriteOutcome::Interrupted { partial } => {
                    let close = session.outbound.close_reason().expect("interrupted only by a close");
                    finish(&mut stream, partial, close, &last_written, &mut reader).await;
                    break close;
                }
            }
            continue;
        }
        if let Some(close) = drained.close {
            finish(&mut stream, None, close, &last_written, &mut reader).await;
            break close;
        }
        tokio::select! {
            // Both arms are cancel-safe: a wake-up that loses the race stays stored in the
            // Notify, and the deadline is recomputed each turn.
            biased;
            () = session.outbound.wait_for_frames() => {}
            () = tokio::time::sleep_until(heartbeat.next_ping) => heartbeat.tick(session),
        }
    };
    if close.cause == CloseReason::HeartbeatTimeout {
        hub.metrics.heartbeat_timeouts.inc();
    }
    close.cause
}

fn record_batch(hub: &Hub, batch: &[Arc<Event>], bytes: usize) {
    let mut deliveries = batch.iter().filter(|e| e.is_delivery());
    if let Some(oldest) = deliveries.next() {
        hub.metrics.delivery_lag_seconds.observe(oldest.received_at.elapsed().as_secs_f64());
        hub.metrics.deliveries.inc_by(1 + deliveries.count() as u64);
    }
    hub.metrics.flushes.inc();
    hub.metrics.batch_frames.observe(batch.len() as f64);
    hub.metrics.queue_depth_bytes.observe(bytes as f64);
}

/// Writes every frame of `batch`, many per syscall; stops early if the connection is closed.
async fn write_batch(
    stream: &mut OwnedWriteHalf,
    batch: &[Arc<Event>],
    session: &Session,
    heartbeat: &mut Heartbeat,
    last_written: &mut LastWritten,
) -> WriteOutcome {
    let mut index = 0;
    let mut offset = 0;
    while index < batch.len() {
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let mut count = 0;
        for (i, event) in batch[index..].iter().take(SLICES_PER_WRITE).enumerate() {
            let start = if i == 0 { offset } else { 0 };
            slices[count] = IoSlice::new(&event.frame[start..]);
            count += 1;
        }
        let written = tokio::select! {
            // The write is first so that a ready socket always makes progress; a vectored
            // write is cancel-safe (it either wrote and returned, or wrote nothing).
            biased;
            result = stream.write_vectored(&slices[..count]) => match result {
                Ok(0) | Err(_) => return WriteOutcome::Failed,
                Ok(n) => n,
            },
            () = session.outbound.wait_for_close() => {
                let partial = (offset > 0).then(|| batch[index].frame.slice(offset..));
                return WriteOutcome::Interrupted { partial };
            }
            () = tokio::time::sleep_until(heartbeat.next_ping) => {
                // The socket is full; a peer that also answers nothing is closed.
                heartbeat.tick(session);
                continue;
            }
        };
        let mut left = written;
        while left > 0 {
            let remaining = batch[index].frame.len() - offset;
            if left >= remaining {
                left -= remaining;
                last_written.note(&batch[index]);
                index += 1;
                offset = 0;
            } else {
                offset += left;
                left = 0;
            }
        }
    }
    WriteOutcome::Done
}

/// Ends the connection: the rest of a begun frame, for a drain or slow-consumer close the
/// `closing` notice with the last ids written, the close frame, FIN, then a short wait for the
/// peer's answer.
async fn finish(
    stream: &mut OwnedWriteHalf,
    partial: Option<Bytes>,
    close: Close,
    last_written: &LastWritten,
    reader: &mut tokio::task::JoinHandle<()>,
) {
    let close_frame = wire::close_frame_raw(close.code, close.reason);
    let closing = matches!(close.cause, CloseReason::Drain | CloseReason::SlowConsumer)
        .then(|| protocol::encode_closing(close.code, &last_written.0));
    let write = async {
        if let Some(partial) = partial {
            stream.write_all(&partial).await?;
        }
        if let Some(closing) = closing {
            stream.write_all(&closing).await?;
        }
        stream.write_all(&close_frame).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write).await;
    if tokio::time::timeout(CLOSE_READ_GRACE, &mut *reader).await.is_err() {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First pings of many connections spread over [0.5, 1.5) intervals.
    #[test]
    fn first_pings_are_spread() {
        let interval = Duration::from_secs(30);
        let start = Instant::now();
        let offsets: Vec<f64> =
            (1..=1000u64).map(|seed| (Heartbeat::new(interval, seed).next_ping - start).as_secs_f64()).collect();
        let min = offsets.iter().cloned().fold(f64::MAX, f64::min);
        let max = offsets.iter().cloned().fold(0.0, f64::max);
        assert!(min >= 15.0 && max < 45.5, "{min}..{max}");
        assert!(max - min > 25.0, "offsets spread over most of the window: {min}..{max}");
        let in_first_second = offsets.iter().filter(|o| **o < min + 1.0).count();
        assert!(in_first_second < 100, "{in_first_second} pings in the same second");
    }

    /// A peer's close code is echoed; codes it may not send become 1002.
    #[test]
    fn peer_close_codes() {
        assert_eq!(peer_close(None).code, 1000);
        assert_eq!(peer_close(Some(4001)).code, 4001);
        assert_eq!(peer_close(Some(1005)).code, 1002);
    }
}
