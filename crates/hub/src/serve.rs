//! `mt-stream serve`: wires the hub, the source and both listeners together, and runs the drain.
//!
//! The drain sequence, on shutdown (SIGTERM):
//! 1. readiness turns 503 and new upgrades get 503 at once (the hub is marked draining);
//! 2. open connections are closed with 1001, spread evenly over `MT_DRAIN_SECONDS`, so their
//!    clients do not reconnect all at the same moment;
//! 3. the hub waits for every session and source task to end (bounded), quits Redis, and
//!    returns; `main` exits 0.
//!
//! Tests call [`run`] with listeners bound to port 0, exactly as `main` does.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::auth::Access;
use crate::config::{Config, SourceConfig};
use crate::history::memory::MemoryHistory;
use crate::history::History;
use crate::hub::{Hub, SourceLink};
use crate::listener;
use crate::metrics::Metrics;
use crate::outbound::Close;
use crate::recovery::Recovery;
use crate::server::{self, App};
use crate::session;
use crate::shutdown::Shutdown;
use crate::source::embedded::EmbeddedBroker;
use crate::source::redis::{RedisSetupError, RedisSource};
use crate::source::Source;

/// How the drain ended.
#[derive(Debug)]
pub struct DrainReport {
    /// Connections asked to close.
    pub closed: usize,
    /// Tasks still running when the wait gave up (0 on a clean drain).
    pub unfinished_tasks: usize,
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
}

/// Serves until `shutdown` is triggered, then drains.
pub async fn run(
    config: Config,
    public: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<DrainReport, ServeError> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    let process = crate::exposition::ProcessMetrics::register(&mut registry);
    let drain_window = config.drain;

    let policies = config.policies.clone();
    let (source, hub, history) = match &config.source {
        SourceConfig::Embedded => {
            let hub = Arc::new(Hub::new(config.budget, metrics, SourceLink::Embedded, policies.clone()));
            let cap = config.budget.embedded_history_cap().bytes() as usize;
            let history = Arc::new(MemoryHistory::new(policies.limits.clone(), cap));
            let broker = EmbeddedBroker::new(Arc::clone(&hub), Arc::clone(&history));
            // The in-process broker cannot go away or fall silent.
            hub.metrics.source_up.set(1);
            (Source::Embedded(broker), hub, History::Memory(history))
        }
        SourceConfig::Redis(target) => {
            let (interest_tx, interest_rx) = mpsc::unbounded_channel();
            let hub =
                Arc::new(Hub::new(config.budget, metrics, SourceLink::OnDemand { interest: interest_tx }, policies));
            let redis =
                RedisSource::start(target, config.channel_prefix.clone(), Arc::clone(&hub), interest_rx, &shutdown)?;
            let history = redis.history();
            (Source::Redis(redis), hub, history)
        }
    };
    let access = Arc::new(Access::new(&config.auth));
    if let (Access::Enforced { verifier, .. }, Some(file)) = (&*access, &config.auth.public_keys) {
        hub.metrics.auth_public_keys.set(file.keys.len() as i64);
        shutdown.spawn(crate::auth::reload::run(
            Arc::clone(verifier),
            file.path.clone(),
            config.auth.reload_interval,
            Arc::new(hub.metrics.clone()),
            shutdown.clone(),
        ));
    }
    if access.is_open() {
        tracing::warn!("{}", Access::OPEN_WARNING);
    }
    let github = Arc::new(crate::github::Github::new(
        config.github.clone(),
        &source,
        config.channel_prefix.as_str(),
        hub.metrics.github.clone(),
    ));
    let app = Arc::new(App {
        access,
        config,
        hub: Arc::clone(&hub),
        source,
        recovery: Recovery::new(history),
        registry,
        process,
        shutdown: shutdown.clone(),
        refusals: Default::default(),
        github,
    });
    crate::github::start(&app);

    let public_loop = tokio::spawn(listener::accept_loop(
        public,
        Arc::clone(&app),
        listener::PUBLIC,
        server::tune_client_socket,
        server::handle_public,
    ));
    let admin_loop = tokio::spawn(listener::accept_loop(
        admin,
        Arc::clone(&app),
        listener::ADMIN,
        server::tune_admin_socket,
        crate::admin::handle,
    ));

    shutdown.cancelled().await;
    hub.start_draining();
    let closed = drain(&hub, drain_window).await;

    let grace = session::CLOSE_WRITE_TIMEOUT + session::CLOSE_READ_GRACE + Duration::from_secs(1);
    let finished = tokio::time::timeout(grace, shutdown.wait()).await.is_ok();
    let unfinished_tasks = if finished { 0 } else { shutdown.running_tasks() };
    if let Source::Redis(redis) = &app.source {
        redis.quit().await;
    }
    public_loop.abort();
    admin_loop.abort();
    Ok(DrainReport { closed, unfinished_tasks })
}

/// Closes every connection with 1001, spread evenly over `window`.
async fn drain(hub: &Hub, window: Duration) -> usize {
    let clients = hub.clients();
    let count = clients.len();
    tracing::info!(connections = count, window_seconds = window.as_secs(), "draining");
    if count > 0 {
        let step = window / count as u32;
        let start = tokio::time::Instant::now();
        for (i, client) in clients.iter().enumerate() {
            tokio::time::sleep_until(start + step * i as u32).await;
            client.outbound.close(Close::Drain);
        }
    }
    // Upgrades admitted just before the drain began.
    hub.close_all_now(Close::Drain);
    count
}
