//! One poller per release: the pods race for a lease in Redis (`SET NX PX`, renewed every third
//! of `MT_GITHUB_LEASE_SECONDS`); the holder polls every target, the others wait. A holder
//! that cannot renew (the lease went to another pod, or Redis does not answer) stops polling at
//! once, before its lease could have expired; a pod that stops gives the lease up so the next
//! one starts without waiting it out. With the embedded broker the one process always holds it.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::poller::{PollContext, Poller};
use super::Github;
use crate::server::App;

/// This pod's lease value: its host name (the pod's name in Kubernetes), process id and a
/// random part, so a restarted process never mistakes an old lease for its own.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut random = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!("{}/{}/{:016x}", host.trim(), std::process::id(), u64::from_le_bytes(random))
}

/// What the lease loop last logged, so each state is logged once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Unknown,
    Leader,
    Follower,
    Unreachable,
}

/// Runs the lease loop (and the pollers while leading) until the pod stops.
pub async fn run(app: Arc<App>, github: Arc<Github>) {
    let holder = holder_id();
    let ttl = github.settings.lease;
    let mut leading: Option<CancellationToken> = None;
    let mut role = Role::Unknown;
    loop {
        let held = github.store.hold_lease(&holder, ttl).await;
        let now = match &held {
            Ok(true) => Role::Leader,
            Ok(false) => Role::Follower,
            Err(_) => Role::Unreachable,
        };
        if now != Role::Leader {
            if let Some(token) = leading.take() {
                token.cancel();
            }
        }
        if now == Role::Leader && leading.as_ref().is_none_or(CancellationToken::is_cancelled) {
            leading = Some(start_pollers(&app, &github, &holder));
        }
        if now != role {
            match (&held, now) {
                (_, Role::Leader) => {
                    tracing::info!(targets = github.settings.poll.len(), "this pod polls GitHub (it holds the lease)")
                }
                (_, Role::Follower) => tracing::info!("another pod polls GitHub (it holds the lease)"),
                (Err(error), _) => tracing::warn!(%error, "cannot reach the GitHub poller's lease: not polling"),
                _ => {}
            }
            role = now;
        }
        github.metrics.poller_leader.set(leading.as_ref().is_some_and(|t| !t.is_cancelled()) as i64);
        let lost = leading.clone().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            // A poller found the lease taken over: renew (or not) at once.
            _ = lost.cancelled(), if leading.is_some() => {}
            _ = app.shutdown.cancelled() => break,
        }
    }
    if let Some(token) = leading.take() {
        token.cancel();
        if let Err(error) = github.store.release_lease(&holder).await {
            tracing::warn!(%error, "could not give the GitHub poller's lease up: the next pod waits for it to expire");
        }
    }
    github.metrics.poller_leader.set(0);
}

fn start_pollers(app: &Arc<App>, github: &Arc<Github>, holder: &str) -> CancellationToken {
    let leading = CancellationToken::new();
    let ctx = Arc::new(PollContext {
        app: Arc::clone(app),
        github: Arc::clone(github),
        api: Api::new(github.settings.api_url.clone(), github.settings.token.clone()),
        holder: holder.to_owned(),
        paused_until: Mutex::new(None),
        leading: leading.clone(),
    });
    for target in &github.settings.poll {
        app.shutdown.spawn(Poller::new(Arc::clone(&ctx), target.clone()).run());
    }
    leading
}
