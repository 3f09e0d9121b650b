//! The Redis connection's story in the hub's own words, one line per change of state: lost
//! (with the cause), still down (every 30 s, with the attempts so far), back (after how long).
//! The Redis client library's own warnings for the same events are filtered out of the default
//! log level (`main`'s `RUST_LOG` default is `info,fred=error`), so an outage reads as three
//! lines, not hundreds.

use std::time::{Duration, Instant};

use fred::prelude::*;

use crate::shutdown::Shutdown;

/// How often a continuing outage is logged again.
const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);

/// Logs the subscriber connection's state changes until shutdown.
pub(super) async fn run(subscriber: Client, shutdown: Shutdown) {
    let mut errors = subscriber.error_rx();
    let mut reconnects = subscriber.reconnect_rx();
    // (when it was lost, attempts since, when the last "still down" line went out)
    let mut outage: Option<(Instant, u64, Instant)> = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            error = errors.recv() => {
                let Ok((error, server)) = error else { continue };
                let server = server.map(|s| s.to_string()).unwrap_or_else(|| "redis".into());
                let error = crate::publish::describe_redis_error(&error);
                match &mut outage {
                    None => {
                        tracing::warn!(%server, cause = %error, "redis connection lost; retrying (backoff 100 ms doubling to 2 s); clients stay connected, delivery paused");
                        outage = Some((Instant::now(), 1, Instant::now()));
                    }
                    Some((since, attempts, last_line)) => {
                        *attempts += 1;
                        if last_line.elapsed() >= STILL_DOWN_EVERY {
                            *last_line = Instant::now();
                            tracing::warn!(%server, cause = %error, down_s = since.elapsed().as_secs(), attempts = *attempts, "redis still unreachable; retrying");
                        }
                    }
                }
            }
            reconnect = reconnects.recv() => {
                if let (Ok(server), Some((since, attempts, _))) = (reconnect, outage.take()) {
                    tracing::info!(%server, down_ms = since.elapsed().as_millis() as u64, attempts, "redis connection back; resubscribing and catching up from history");
                }
            }
        }
    }
}
