//! Key rotation without a restart: the public keys file (a mounted Secret, which the kubelet
//! rewrites in place when the Secret changes) is read again every `MT_AUTH_KEYS_RELOAD_SECONDS`.
//! A changed, valid file replaces the keys at once; a file that no longer parses, or holds no
//! key, leaves the keys in use as they are, logs why and counts
//! `mt_stream_auth_key_reload_failures_total`, so a botched rotation never locks everyone out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{PublicKeysFile, Verifier};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Re-reads `path` every `interval` until `stop` fires.
pub async fn run(verifier: Arc<Verifier>, path: PathBuf, interval: Duration, metrics: Arc<Metrics>, stop: Shutdown) {
    // The text in use: a changed file is taken even when its kids stay the same (a key
    // replaced under its old kid).
    let mut in_use = std::fs::read(&path).unwrap_or_default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(&path)).await
        };
        let text = match read {
            Ok(Ok(text)) if text == in_use => continue,
            Ok(Ok(text)) => text,
            Ok(Err(error)) => {
                metrics.auth_key_reload_failures.inc();
                tracing::error!(path = %path.display(), %error, "public keys file unreadable; the keys in use stay");
                continue;
            }
            Err(error) => {
                metrics.auth_key_reload_failures.inc();
                tracing::error!(%error, "reading the public keys file failed; the keys in use stay");
                continue;
            }
        };
        match PublicKeysFile::parse(&path, &text) {
            Ok(keys) => {
                tracing::info!(path = %path.display(), keys = keys.len(), "public keys file changed; new keys in use");
                metrics.auth_public_keys.set(keys.len() as i64);
                verifier.replace_public_keys(keys);
            }
            Err(why) => {
                metrics.auth_key_reload_failures.inc();
                tracing::error!(path = %path.display(), %why, "public keys file unusable; the keys in use stay");
            }
        }
        // A broken file is reported once, and again when it changes.
        in_use = text;
    }
}
