//! A connection's outbound queue: frames waiting for its writer, bounded in bytes.
//!
//! Publishers push shared, already-framed events ([`Event`]); the connection's writer drains
//! everything queued in one go and writes it as one batch. When a push would take the queue
//! over its cap the client is a slow consumer: the queue is emptied at once (its memory freed)
//! and the connection is marked for a 4008 close. A push never blocks and never waits for the
//! socket, so one stalled client cannot slow a publisher or anyone else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::lock::lock;
use crate::metrics::CloseReason;
use crate::wire::CloseCode;

/// One framed message, shared by every queue it is pushed to.
#[derive(Debug)]
pub struct Event {
    /// The complete WebSocket frame.
    pub frame: Bytes,
    /// When the source handed it to the hub (delivery lag is measured from here).
    pub received_at: Instant,
    /// True for channel events (counted as deliveries), false for replies and control frames.
    pub is_delivery: bool,
}

impl Event {
    /// A reply or control frame for one connection.
    pub fn control(frame: Bytes) -> Arc<Self> {
        Arc::new(Self { frame, received_at: Instant::now(), is_delivery: false })
    }
}

/// Why and how the connection is to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The close code sent to the peer.
    pub code: u16,
    /// The reason text sent with it.
    pub reason: &'static str,
    /// The metric label of the cause.
    pub cause: CloseReason,
}

impl Close {
    pub const fn new(code: CloseCode, reason: &'static str, cause: CloseReason) -> Self {
        Self { code: code as u16, reason, cause }
    }

    pub const SLOW_CONSUMER: Close =
        Close::new(CloseCode::SlowConsumer, "slow consumer: queue over budget", CloseReason::SlowConsumer);
    pub const HEARTBEAT_TIMEOUT: Close =
        Close::new(CloseCode::HeartbeatTimeout, "heartbeat timeout", CloseReason::HeartbeatTimeout);
    pub const DRAIN: Close = Close::new(CloseCode::GoingAway, "server shutting down", CloseReason::Drain);
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push took the queue over its cap; the connection is now closing with 4008.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Arc<Event>>,
    bytes: usize,
    close: Option<Close>,
}

/// The queue. The writer waits on [`Outbound::wait_for_frames`] and [`Outbound::wait_for_close`].
pub struct Outbound {
    state: Mutex<State>,
    /// Woken when the queue goes from empty to non-empty, or on close.
    frames_ready: Notify,
    /// Woken on close, so a writer blocked on a full socket stops waiting.
    closing: Notify,
    cap: usize,
    /// The global `queued_bytes` gauge, shared with every other queue.
    queued_bytes: Gauge,
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
            cap,
            queued_bytes,
        }
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
        self.queued_bytes.dec_by(freed as i64);
        self.frames_ready.notify_one();
        self.closing.notify_one();
    }

    /// Queues a frame. A frame larger than the cap is still accepted into an empty queue, so
    /// one big event never closes an idle client.
    pub fn push(&self, event: &Arc<Event>) -> Push {
        let len = event.frame.len();
        let mut state = self.lock();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.bytes > 0 && state.bytes + len > self.cap {
            self.close_locked(state, Close::SLOW_CONSUMER);
            return Push::Overflowed;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(Arc::clone(event));
        state.bytes += len;
        drop(state);
        self.queued_bytes.inc_by(len as i64);
        if was_empty {
            self.frames_ready.notify_one();
        }
        Push::Queued
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

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.bytes > 0 {
            self.queued_bytes.dec_by(state.bytes as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(len: usize) -> Arc<Event> {
        Arc::new(Event { frame: Bytes::from(vec![0u8; len]), received_at: Instant::now(), is_delivery: true })
    }

    /// Frames queue up to the cap; the push that passes it closes with 4008 and frees the queue.
    #[test]
    fn overflow_closes_as_slow_consumer_and_frees_memory() {
        let gauge = Gauge::default();
        let queue = Outbound::new(1000, gauge.clone());
        for _ in 0..10 {
            assert_eq!(queue.push(&event(100)), Push::Queued);
        }
        assert_eq!(gauge.get(), 1000);
        assert_eq!(queue.push(&event(1)), Push::Overflowed);
        assert_eq!(gauge.get(), 0);
        assert_eq!(queue.queued(), 0);
        assert_eq!(queue.close_reason(), Some(Close::SLOW_CONSUMER));
        assert_eq!(queue.push(&event(1)), Push::Closed);
    }

    /// One event bigger than the cap still reaches a client whose queue is empty.
    #[test]
    fn oversized_event_fits_an_empty_queue() {
        let queue = Outbound::new(100, Gauge::default());
        assert_eq!(queue.push(&event(500)), Push::Queued);
        assert_eq!(queue.push(&event(1)), Push::Overflowed);
    }

    /// Draining takes everything in order and the gauge follows.
    #[test]
    fn drain_takes_all_in_order() {
        let gauge = Gauge::default();
        let queue = Outbound::new(10_000, gauge.clone());
        let events: Vec<_> = (1..=5).map(event).collect();
        for e in &events {
            queue.push(e);
        }
        let mut batch = Vec::new();
        let drained = queue.drain_into(&mut batch);
        assert_eq!(drained.bytes, 15);
        assert_eq!(drained.close, None);
        let lens: Vec<usize> = batch.iter().map(|e| e.frame.len()).collect();
        assert_eq!(lens, [1, 2, 3, 4, 5]);
        assert_eq!(gauge.get(), 0);
    }

    /// The first close reason wins.
    #[test]
    fn first_close_wins() {
        let queue = Outbound::new(100, Gauge::default());
        assert!(queue.close(Close::DRAIN));
        assert!(!queue.close(Close::HEARTBEAT_TIMEOUT));
        assert_eq!(queue.close_reason(), Some(Close::DRAIN));
    }
}
