//! A connection's writer task: writes what nobody else will (its replies and pings, and
//! everything once the socket was full), drives the heartbeat and token deadlines, and ends the
//! connection (the rest of a begun frame, the `closing` notice where the close sends one, the
//! close frame, FIN, a short wait for the peer's answer).
//!
//! Events from the fan-out are written by the hub's flusher ([`crate::hub::flusher`]) while
//! this task sleeps; it takes over when a write finds the socket full, waits for the socket to
//! drain, and then writes everything that queued up meanwhile in one go. Both write through
//! [`crate::outbound::Outbound::flush`], one at a time, in queue order.

use std::io;
use std::sync::Arc;

use tokio::net::tcp::OwnedWriteHalf;

use super::auth::ConnectionAuth;
use super::heartbeat::Heartbeat;
use super::{CLOSE_READ_GRACE, CLOSE_WRITE_TIMEOUT};
use crate::close::CloseReason;
use crate::hub::{Client, Hub};
use crate::outbound::{Close, FlushStats, Flushed};
use crate::protocol;

pub(super) async fn write_loop(
    hub: &Hub,
    client: &Arc<Client>,
    auth: &ConnectionAuth,
    stream: OwnedWriteHalf,
    mut reader: tokio::task::JoinHandle<()>,
) -> CloseReason {
    let socket = Arc::new(stream);
    client.outbound.attach(Arc::clone(&socket));
    let mut heartbeat = Heartbeat::new(hub.budget().heartbeat_interval, client.id.0);
    let close = loop {
        let mut stats = FlushStats::default();
        let flushed = client.outbound.flush(&mut stats);
        hub.metrics.record_flush(&stats, std::time::Instant::now());
        match flushed {
            Flushed::Empty => {
                let auth_deadline = auth.next_deadline();
                tokio::select! {
                    // Every arm is cancel-safe: a wake-up that loses the race stays stored in
                    // the Notify, and the deadlines are recomputed each turn (a refreshed token
                    // pushes its reply, which wakes this loop to read the new ones).
                    biased;
                    () = client.outbound.wait_for_frames() => {}
                    () = tokio::time::sleep_until(heartbeat.next_ping) => heartbeat.tick(client),
                    () = sleep_until_some(auth_deadline) => auth.on_deadline(client, &hub.metrics),
                }
            }
            Flushed::Blocked => {
                tokio::select! {
                    biased;
                    ready = socket.writable() => {
                        if ready.is_err() {
                            break None;
                        }
                    }
                    () = client.outbound.wait_for_close() => {}
                    () = tokio::time::sleep_until(heartbeat.next_ping) => {
                        // The socket stayed full. A connection already closing (its last
                        // replies were left to go out first) waits no longer than this;
                        // otherwise a peer that also answers nothing is closed.
                        if client.outbound.close_reason().is_some() {
                            client.outbound.abandon_queued();
                        } else {
                            heartbeat.tick(client);
                        }
                    }
                }
            }
            Flushed::Closing(close) => {
                finish(&socket, client, close, &mut reader).await;
                break Some(close);
            }
            Flushed::Failed => break None,
        }
    };
    client.outbound.detach();
    let Some(close) = close else {
        reader.abort();
        return CloseReason::IoError;
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

/// Ends the connection: the rest of a begun frame, for a drain or slow-consumer close the
/// `closing` notice with the last ids written, the close frame, FIN, then a short wait for the
/// peer's answer.
async fn finish(socket: &OwnedWriteHalf, client: &Client, close: Close, reader: &mut tokio::task::JoinHandle<()>) {
    let (unfinished, last_written) = client.outbound.ending();
    let closing = close.sends_closing_notice().then(|| protocol::encode_closing(close.code(), &last_written.0));
    let write = async {
        if let Some(unfinished) = unfinished {
            write_all(socket, &unfinished).await?;
        }
        if let Some(closing) = closing {
            write_all(socket, &closing).await?;
        }
        write_all(socket, &close.frame()).await?;
        socket2::SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Write)
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write).await;
    if tokio::time::timeout(CLOSE_READ_GRACE, &mut *reader).await.is_err() {
        reader.abort();
    }
}

/// Writes all of `bytes` through a shared socket.
async fn write_all(socket: &OwnedWriteHalf, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
