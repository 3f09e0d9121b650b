//! A connection's writer: drains the outbound queue in batches, writes each batch with
//! vectored writes, drives the heartbeat, and ends the connection (the rest of a begun frame,
//! the `closing` notice where the close sends one, the close frame, FIN, a short wait for the
//! peer's answer).

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::auth::ConnectionAuth;
use super::heartbeat::Heartbeat;
use super::{CLOSE_READ_GRACE, CLOSE_WRITE_TIMEOUT};
use crate::close::CloseReason;
use crate::event_id::EventId;
use crate::hub::{Client, Hub};
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName};

/// Frames per vectored write call (well under IOV_MAX).
const SLICES_PER_WRITE: usize = 64;

/// Where a batch write stopped.
enum WriteOutcome {
    Done,
    /// Closing was requested mid-batch; `partial` is the rest of a frame already begun.
    Interrupted {
        partial: Option<Bytes>,
    },
    Failed,
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

pub(super) async fn write_loop(
    hub: &Hub,
    client: &Arc<Client>,
    auth: &ConnectionAuth,
    mut stream: OwnedWriteHalf,
    mut reader: tokio::task::JoinHandle<()>,
) -> CloseReason {
    let mut heartbeat = Heartbeat::new(hub.budget().heartbeat_interval, client.id.0);
    let mut batch: Vec<Arc<Event>> = Vec::new();
    let mut last_written = LastWritten::default();
    let close = loop {
        let drained = client.outbound.drain_into(&mut batch);
        if !batch.is_empty() {
            record_batch(hub, &batch, drained.bytes);
            let outcome = write_batch(&mut stream, &batch, client, &mut heartbeat, &mut last_written).await;
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
                    let close = client.outbound.close_reason().expect("interrupted only by a close");
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
        let auth_deadline = auth.next_deadline();
        tokio::select! {
            // Every arm is cancel-safe: a wake-up that loses the race stays stored in the
            // Notify, and the deadlines are recomputed each turn (a refreshed token pushes its
            // reply, which wakes this loop to read the new ones).
            biased;
            () = client.outbound.wait_for_frames() => {}
            () = tokio::time::sleep_until(heartbeat.next_ping) => heartbeat.tick(client),
            () = sleep_until_some(auth_deadline) => auth.on_deadline(client, &hub.metrics),
        }
    };
    if close == Close::HeartbeatTimeout {
        hub.metrics.heartbeat_timeouts.inc();
    }
    close.metric_reason()
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
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
    client: &Client,
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
            () = client.outbound.wait_for_close() => {
                let partial = (offset > 0).then(|| batch[index].frame.slice(offset..));
                return WriteOutcome::Interrupted { partial };
            }
            () = tokio::time::sleep_until(heartbeat.next_ping) => {
                // The socket is full. A connection already closing (its last replies were left
                // to go out first) waits no longer than this; otherwise a peer that also
                // answers nothing is closed.
                if client.outbound.close_reason().is_some() {
                    let partial = (offset > 0).then(|| batch[index].frame.slice(offset..));
                    return WriteOutcome::Interrupted { partial };
                }
                heartbeat.tick(client);
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
    let close_frame = close.frame();
    let closing = close.sends_closing_notice().then(|| protocol::encode_closing(close.code(), &last_written.0));
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
