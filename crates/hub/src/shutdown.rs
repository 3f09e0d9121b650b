//! The one shutdown handle: a cancellation token (SIGTERM/SIGINT cancel it) and a task tracker
//! every long-lived task is spawned on, so the drain can wait for all of them.
//!
//! Tracked: each WebSocket connection (hyper's graceful shutdown does not see upgraded sockets)
//! and its reader, each resume task, each catch-up task, and the Redis source's pump,
//! subscriptions and canary tasks. Not tracked, on purpose: the two accept loops (they run until
//! `crate::serve` aborts them after the drain, so waiting for them would never end) and a
//! connection's HTTP phase before its upgrade (bounded by the header timeout; an idle keep-alive
//! connection to the admin port must not hold up the drain).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cloned into every task that must stop on shutdown.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started (cancel-safe).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Spawns a tracked task.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits for every tracked task (call after [`Shutdown::trigger`]).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await
    }

    /// Tracked tasks still running.
    pub fn running_tasks(&self) -> usize {
        self.tracker.len()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
