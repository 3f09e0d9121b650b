//! A connection's outbound queue: frames waiting for its writer, bounded in bytes.
//!
//! Publishers push shared, already-framed events ([`Event`]); the connection's writer drains
//! everything queued in one go and writes it as one batch. When a push would take the queue
//! over its cap the client is a slow consumer: the queue is emptied at once (its memory freed)
//! and the connection is marked for a 4008 close. A push never blocks and never waits for the
//! socket, so one stalled client cannot slow a publisher or anyone else.
//!
//! Channels with the `conflate` policy are the exception: when an event of such a channel
//! would overflow the queue, every queued event of a conflated channel except its newest is
//! dropped and replaced by one `skipped` notice (how many, from which id to which), and the
//! queue closes only if that did not free enough room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

mod conflate;
mod event;

pub use crate::close::Close;
use crate::lock::lock;
use conflate::conflate;
pub use event::{Event, EventKind, Skip};

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
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
}

/// The queue. The writer waits on [`Outbound::wait_for_frames`] and [`Outbound::wait_for_close`].
pub struct Outbound {
    state: Mutex<State>,
    /// Woken when the queue goes from empty to non-empty, or on close.
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
        }
    }

    /// Counts this queue's slow-consumer close in `counter` (the hub's metric).
    pub fn counting_slow_consumers(mut self, counter: Counter) -> Self {
        self.slow_consumer_closes = counter;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks the connection closed under the held lock, drops what is queued, and wakes the
    /// writer on both of its waits.
    fn close_locked(&self, mut state: MutexGuard<'_, State>, close: Close) {
        let freed = state.bytes;
        state.frames = VecDeque::new();
        state.bytes = 0;
        state.close = Some(close);
        drop(state);
        if close == Close::SlowConsumer {
            self.slow_consumer_closes.inc();
        }
        self.queued_bytes.dec_by(freed as i64);
        self.frames_ready.notify_one();
        self.closing.notify_one();
        self.drained.notify_waiters();
    }

    /// Queues a frame. A frame larger than the cap is still accepted into an empty queue, so
    /// one big event never closes an idle client.
    pub fn push(&self, event: &Arc<Event>) -> Push {
        let len = event.frame.len();
        let mut state = self.lock();
        if state.close.is_some() {
            return Push::Closed;
        }
        let mut conflated = false;
        if state.bytes > 0 && state.bytes + len > self.cap {
            let freed = match &event.kind {
                EventKind::Delivery { channel, conflate: true, .. } => conflate(&mut state, channel),
                _ => 0,
            };
            self.queued_bytes.dec_by(freed as i64);
            if state.bytes > 0 && state.bytes + len > self.cap {
                self.close_locked(state, Close::SlowConsumer);
                return Push::Overflowed;
            }
            conflated = true;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(Arc::clone(event));
        state.bytes += len;
        drop(state);
        self.queued_bytes.inc_by(len as i64);
        if was_empty {
            self.frames_ready.notify_one();
        }
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
        let state = self.lock();
        if state.close.is_some() {
            return false;
        }
        self.close_locked(state, close);
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

    /// Moves every queued frame into `batch`.
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
