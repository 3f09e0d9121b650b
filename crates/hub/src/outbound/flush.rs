//! Writing a queue to its socket. [`Outbound::flush`] writes frames from the front of the queue
//! with vectored, non-blocking writes while it holds the queue's lock, so whoever calls it (the
//! hub's flusher task or the connection's writer task) writes in queue order and never at the
//! same time as anyone else. What a write did not take stays queued; a frame of which only a
//! part went out stays at the front, with how much of it was written.

use std::io::{self, ErrorKind, IoSlice};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::tcp::OwnedWriteHalf;

use super::{Close, Outbound};
use crate::event_id::EventId;
use crate::protocol::ChannelName;

/// Frames per vectored write call (well under IOV_MAX).
const SLICES_PER_WRITE: usize = 64;

/// Where a flush stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Empty,
    /// The socket took no more; the writer task writes the rest once it drains.
    Blocked,
    /// Everything that was to be written before the close was; the writer ends the connection.
    Closing(Close),
    /// The socket failed, or is gone: the connection is over.
    Failed,
}

/// What one or more flushes wrote, for the delivery metrics.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Write calls that took bytes.
    pub writes: u64,
    /// Frames written in full.
    pub frames: u64,
    /// Of those, channel events.
    pub deliveries: u64,
    /// When the first event written was received (its delivery lag).
    pub oldest_delivery: Option<Instant>,
    /// Bytes queued when the first write began.
    pub queued_bytes: usize,
}

/// The last event id written to a connection, per channel (told in the `closing` notice).
#[derive(Debug, Default)]
pub struct LastWritten(pub Vec<(ChannelName, EventId)>);

impl LastWritten {
    fn note(&mut self, channel: &ChannelName, id: EventId) {
        match self.0.iter_mut().find(|(c, _)| c.same(channel)) {
            Some(slot) => slot.1 = id,
            None => self.0.push((channel.clone(), id)),
        }
    }
}

/// A peer that went away is an error from `send`, never a SIGPIPE.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NO_SIGNAL: i32 = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NO_SIGNAL: i32 = 0;

/// One `send` (one frame) or `sendmsg` (several) straight to the socket: the socket system
/// calls, not `writev`'s file layer, and no look at tokio's readiness state on the way (a
/// cache miss per delivery at low rates). Only a full socket goes through tokio: its
/// write-readiness is cleared, so the writer's `writable()` waits for the socket to drain.
fn send(socket: &OwnedWriteHalf, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let raw = socket2::SockRef::from(socket.as_ref());
    let result = match slices {
        [one] => raw.send_with_flags(one, NO_SIGNAL),
        _ => raw.send_vectored_with_flags(slices, NO_SIGNAL),
    };
    if matches!(&result, Err(error) if error.kind() == ErrorKind::WouldBlock) {
        let _ = socket.as_ref().try_io(Interest::WRITABLE, || Err::<(), _>(ErrorKind::WouldBlock.into()));
    }
    result
}

impl Outbound {
    /// Writes what is queued until the queue is empty or the socket full; adds what it wrote
    /// to `stats`. Never waits.
    pub fn flush(&self, stats: &mut FlushStats) -> Flushed {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut freed = 0usize;
        let outcome = loop {
            if state.frames.is_empty() {
                state.writer_blocked = false;
                break match state.close {
                    Some(close) => Flushed::Closing(close),
                    None => Flushed::Empty,
                };
            }
            let Some(socket) = state.socket.as_ref() else { break Flushed::Failed };
            if stats.writes == 0 {
                stats.queued_bytes = state.bytes;
            }
            let result = {
                let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
                let mut count = 0;
                for (slice, event) in slices.iter_mut().zip(state.frames.iter()) {
                    let start = if count == 0 { state.front_written } else { 0 };
                    *slice = IoSlice::new(&event.frame[start..]);
                    count += 1;
                }
                send(socket, &slices[..count])
            };
            let mut written = match result {
                Ok(0) => break Flushed::Failed,
                Ok(written) => written,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if !state.writer_blocked {
                        self.full_socket_count.inc();
                    }
                    state.writer_blocked = true;
                    break Flushed::Blocked;
                }
                Err(_) => break Flushed::Failed,
            };
            stats.writes += 1;
            while written > 0 {
                let front_left = state.frames.front().map_or(0, |event| event.frame.len()) - state.front_written;
                if written < front_left {
                    state.front_written += written;
                    break;
                }
                written -= front_left;
                state.front_written = 0;
                let Some(event) = state.frames.pop_front() else { break };
                freed += event.frame.len();
                stats.frames += 1;
                if let Some((channel, id)) = event.delivery_id() {
                    state.last_written.note(channel, id);
                    stats.deliveries += 1;
                    stats.oldest_delivery.get_or_insert(event.received_at);
                }
            }
        };
        state.scheduled = false;
        state.bytes -= freed;
        if state.frames.is_empty() && state.frames.capacity() > 64 {
            // Give back what a burst grew; an idle connection keeps no spare queue memory.
            state.frames = std::collections::VecDeque::new();
        }
        drop(guard);
        if freed > 0 {
            self.queued_bytes.dec_by(freed as i64);
            if self.room_waiters.load(Ordering::SeqCst) > 0 {
                self.drained.notify_waiters();
            }
        }
        outcome
    }
}
