//! A connection's outbound queue: frames waiting to be written, bounded in bytes.
//!
//! Publishers push shared, already-framed events ([`Event`]). What is queued is written by
//! [`Outbound::flush`] (`flush.rs`), under the queue's lock, straight from the queue to the
//! socket with one vectored, non-blocking write: by the hub's flusher task for events the
//! fan-out pushed (one task writes to every idle connection, so a delivery wakes no
//! per-connection task), and by the connection's own writer task for its replies, pings and
//! whenever the socket was full (the writer then waits for it to drain and writes everything
//! that queued up meanwhile in one go). Whoever flushes, frames leave in queue order, one
//! writer at a time. When a push would take the queue over its cap the client is a slow
//! consumer: the queue is emptied at once (its memory freed) and the connection is marked for a
//! 4008 close. A push never blocks and never waits for the socket, so one stalled client cannot
//! slow a publisher or anyone else.
//!
//! Channels with the `conflate` policy are the exception: when an event of such a channel
//! would overflow the queue, every queued event of a conflated channel except its newest is
//! dropped and replaced by one `skipped` notice (how many, from which id to which), and the
//! queue closes only if that did not free enough room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

mod conflate;
mod event;
mod flush;

pub use crate::close::Close;
use crate::lock::lock;
use conflate::conflate;
pub use event::{Event, EventKind, Skip};
pub use flush::{FlushStats, Flushed, LastWritten};

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push took the queue over its cap; the connection is now closing with 4008.
    Overflowed,
    /// Queued after conflating older events of conflated channels.
    Conflated,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Arc<Event>>,
    /// Frame bytes in `frames` (what the cap bounds).
    bytes: usize,
    /// Bytes of live events held for this client's resuming subscriptions (their seams), with
    /// each held entry's own cost: at most half the cap, for all its channels together.
    held: usize,
    close: Option<Close>,
    /// Bytes of the front frame already written (a write that took only part of it).
    front_written: usize,
    /// The socket, from [`Outbound::attach`] until [`Outbound::detach`].
    socket: Option<Arc<OwnedWriteHalf>>,
    /// A flusher has this queue on its list and will flush it.
    scheduled: bool,
    /// The writer task found the socket full and writes whatever queues up once it drains.
    writer_blocked: bool,
    /// The last event id written, per channel (told in the `closing` notice).
    last_written: LastWritten,
    /// The rest of a frame begun before the close: a close never cuts a frame in two.
    unfinished: Option<Bytes>,
}

/// The queue. The writer waits on [`Outbound::wait_for_frames`] and [`Outbound::wait_for_close`].
pub struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer task: frames it must write (a reply, or nobody else will), a socket
    /// error a flusher saw, or a close.
    frames_ready: Notify,
    /// Woken on close, so a writer blocked on a full socket stops waiting.
    closing: Notify,
    /// Woken (all waiters) when the writer drains the queue, and on close: a history replay
    /// waits on it to pace itself by what the client takes.
    drained: Notify,
    /// Replays waiting on `drained`; the writer wakes them only when there are any, so a
    /// connection that is not resuming pays one atomic load per flush, not a lock.
    room_waiters: std::sync::atomic::AtomicUsize,
    cap: usize,
    /// The global `queued_bytes` gauge, shared with every other queue.
    queued_bytes: Gauge,
    /// Counts this queue's 4008 close, whatever caused it (an event, a reply or pong, or a
    /// resume that cannot keep up): `slow_consumer_disconnects_total`.
    slow_consumer_closes: Counter,
    /// Counts the times a write found this socket full: `sockets_full_total`.
    full_socket_count: Counter,
}

/// What one drain took out of the queue.
#[derive(Debug, Default)]
pub struct Drained {
    pub bytes: usize,
    pub close: Option<Close>,
}

impl Outbound {
    pub fn new(cap: usize, queued_bytes: Gauge) -> Self {
        Self {
            state: Mutex::new(State::default()),
            frames_ready: Notify::new(),
            closing: Notify::new(),
            drained: Notify::new(),
            room_waiters: std::sync::atomic::AtomicUsize::new(0),
            cap,
            queued_bytes,
            slow_consumer_closes: Counter::default(),
            full_socket_count: Counter::default(),
        }
    }

    /// Counts the times a write finds this socket full in `counter` (the hub's metric).
    pub fn counting_full_sockets(mut self, counter: Counter) -> Self {
        self.full_socket_count = counter;
        self
    }

    /// Counts this queue's slow-consumer close in `counter` (the hub's metric).
    pub fn counting_slow_consumers(mut self, counter: Counter) -> Self {
        self.slow_consumer_closes = counter;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks the connection closed (the caller holds the lock), drops what is queued (but for
    /// the rest of a begun frame), and wakes the writer on both of its waits.
    fn close_locked(&self, state: &mut State, close: Close) {
        self.drop_queued(state);
        state.close = Some(close);
        if close == Close::SlowConsumer {
            self.slow_consumer_closes.inc();
        }
        self.frames_ready.notify_one();
        self.closing.notify_one();
        self.drained.notify_waiters();
    }

    /// Drops what is queued, keeping the rest of a frame already begun.
    fn drop_queued(&self, state: &mut State) {
        if state.front_written > 0 {
            state.unfinished = state.frames.front().map(|event| event.frame.slice(state.front_written..));
            state.front_written = 0;
        }
        state.frames = VecDeque::new();
        self.queued_bytes.dec_by(state.bytes as i64);
        state.bytes = 0;
    }

    /// Queues a reply or control frame and wakes the connection's writer task to write it.
    /// A frame larger than the cap is still accepted into an empty queue, so one big event never
    /// closes an idle client.
    pub fn push(&self, event: &Arc<Event>) -> Push {
        self.enqueue(event, false).0
    }

    /// Queues an event from the fan-out. Returns what the push did, and whether the caller
    /// must put this queue on a flusher's list (`Hub::push` does): only when it was empty, a
    /// socket is attached, and neither a flusher nor a blocked writer will write it anyway.
    /// Without a socket (before the session attaches it) the writer task is woken, as for
    /// [`Outbound::push`].
    pub fn push_for_flusher(&self, event: &Arc<Event>) -> (Push, bool) {
        self.enqueue(event, true)
    }

    /// Queues `event`, then says who writes it: a flusher (for the fan-out's events, when the
    /// queue was empty and a socket is attached; returned as `true` for the caller to schedule),
    /// or the writer task, woken when the queue was empty. A flusher already scheduled or a
    /// blocked writer writes what follows the first frame anyway.
    fn enqueue(&self, event: &Arc<Event>, for_flusher: bool) -> (Push, bool) {
        let mut state = self.lock();
        let push = self.enqueue_locked(&mut state, event);
        if !matches!(push, Push::Queued | Push::Conflated) {
            return (push, false);
        }
        let first = state.frames.len() == 1;
        let to_flusher = for_flusher && state.socket.is_some();
        let schedule = to_flusher && first && !state.scheduled && !state.writer_blocked;
        state.scheduled |= schedule;
        drop(state);
        self.queued_bytes.inc_by(event.frame.len() as i64);
        if first && !to_flusher {
            self.frames_ready.notify_one();
        }
        (push, schedule)
    }

    /// Queues `event` under the held lock (the caller counts it in the gauge once the lock is
    /// released).
    fn enqueue_locked(&self, state: &mut State, event: &Arc<Event>) -> Push {
        let len = event.frame.len();
        if state.close.is_some() {
            return Push::Closed;
        }
        let mut conflated = false;
        if state.bytes > 0 && state.bytes + len > self.cap {
            let freed = match &event.kind {
                EventKind::Delivery { channel, conflate: true, .. } => conflate(state, channel),
                _ => 0,
            };
            self.queued_bytes.dec_by(freed as i64);
            if state.bytes > 0 && state.bytes + len > self.cap {
                self.close_locked(state, Close::SlowConsumer);
                return Push::Overflowed;
            }
            conflated = true;
        }
        state.frames.push_back(Arc::clone(event));
        state.bytes += len;
        if conflated {
            Push::Conflated
        } else {
            Push::Queued
        }
    }

    /// Reserves `bytes` for a live event held for one of this client's resuming subscriptions.
    /// Refused (`false`) when the client's holds, all its channels together, would pass half
    /// its cap, or the connection is closing: the seam then lets go of what it held (history
    /// has it) and the resume reads further. Counted in the `queued_bytes` gauge.
    pub fn try_hold(&self, bytes: usize) -> bool {
        let mut state = self.lock();
        if state.close.is_some() || state.held + bytes > self.cap / 2 {
            return false;
        }
        state.held += bytes;
        drop(state);
        self.queued_bytes.inc_by(bytes as i64);
        true
    }

    /// Gives back what [`Outbound::try_hold`] reserved.
    pub fn release_held(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut state = self.lock();
        state.held = state.held.saturating_sub(bytes);
        drop(state);
        self.queued_bytes.dec_by(bytes as i64);
    }

    /// Bytes held for this client's resuming subscriptions.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Marks the connection for closing (the first reason wins) and drops what is queued.
    /// Returns whether this call set the reason.
    pub fn close(&self, close: Close) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        self.close_locked(&mut state, close);
        true
    }

    /// Marks the connection for closing (the first reason wins) *after* what is queued: the
    /// writer sends the queued frames, then the close. For closes that must be explained by
    /// the replies before them (too many bad requests); bounded by one heartbeat interval if
    /// the peer does not read. Returns whether this call set the reason.
    pub fn close_after_queued(&self, close: Close) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(close);
        drop(state);
        self.frames_ready.notify_one();
        self.drained.notify_waiters();
        true
    }

    /// The close reason, if the connection is closing.
    pub fn close_reason(&self) -> Option<Close> {
        self.lock().close
    }

    /// Moves every queued frame into `batch`: how the queue is read without a socket (the
    /// benches, and tests of what was queued).
    pub fn drain_into(&self, batch: &mut Vec<Arc<Event>>) -> Drained {
        let mut state = self.lock();
        let bytes = state.bytes;
        batch.extend(state.frames.drain(..));
        state.bytes = 0;
        if state.frames.capacity() > 64 {
            // Give back what a burst grew; an idle connection keeps no spare queue memory.
            state.frames = VecDeque::new();
        }
        let close = state.close;
        drop(state);
        if bytes > 0 {
            self.queued_bytes.dec_by(bytes as i64);
            if self.room_waiters.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                self.drained.notify_waiters();
            }
        }
        Drained { bytes, close }
    }

    /// Gives the queue its socket: from now on [`Outbound::flush`] writes to it.
    pub fn attach(&self, socket: Arc<OwnedWriteHalf>) {
        self.lock().socket = Some(socket);
    }

    /// Takes the socket back (the connection ended), so it closes once the writer lets go.
    pub fn detach(&self) {
        self.lock().socket = None;
    }

    /// What the writer needs to end the connection: the rest of a frame begun before the close,
    /// and the last event id written per channel.
    pub fn ending(&self) -> (Option<Bytes>, LastWritten) {
        let mut state = self.lock();
        let unfinished = state.unfinished.take();
        (unfinished, std::mem::take(&mut state.last_written))
    }

    /// Gives up on what is still queued for a closing connection whose peer does not read
    /// (its rest of a begun frame is kept, as for any close).
    pub fn abandon_queued(&self) {
        let mut state = self.lock();
        self.drop_queued(&mut state);
    }

    /// Wakes the writer task (a flusher found the socket full, or failing).
    pub fn wake_writer(&self) {
        self.frames_ready.notify_one();
    }

    /// Resolves when frames may be waiting (cancel-safe: a missed wake-up is kept as a permit).
    pub async fn wait_for_frames(&self) {
        self.frames_ready.notified().await
    }

    /// Resolves when the connection has been marked for closing (cancel-safe).
    pub async fn wait_for_close(&self) {
        self.closing.notified().await
    }

    /// The queue's cap in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Waits until `has_room` holds for the bytes queued, checking again each time the writer
    /// takes frames out, or until `limit` passed or the connection is closing. Returns whether
    /// there is room.
    pub async fn wait_for_room(&self, has_room: impl Fn(usize) -> bool, limit: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let drained = self.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        // Registered before looking, so a drain between the look and the wait still wakes us.
        let room = {
            let state = self.lock();
            state.close.is_none() && has_room(state.bytes)
        };
        if !room && self.close_reason().is_none() {
            let _ = tokio::time::timeout(limit, drained).await;
        }
        self.room_waiters.fetch_sub(1, Ordering::SeqCst);
        let state = self.lock();
        state.close.is_none() && has_room(state.bytes)
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.bytes + state.held > 0 {
            self.queued_bytes.dec_by((state.bytes + state.held) as i64);
        }
    }
}

#[cfg(test)]
mod tests;
