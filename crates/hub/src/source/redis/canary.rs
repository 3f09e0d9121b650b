//! The canary of a single-server source: a private event published every [`CANARY_INTERVAL`];
//! the subscription is trusted only while events (canaries included) keep arriving. It also
//! keeps the source's gauges fresh and forces a reconnect of a subscription that went silent.
//! (A cluster has one canary per primary: see `cluster`.) A canary refused with READONLY went to
//! a primary a Sentinel failover demoted: the publisher reconnects, asking the Sentinels again.

use std::sync::Arc;
use std::time::Instant;

use fred::prelude::*;

use super::commands::reconnect_if_replica;
use super::single::readiness;
use super::{command, Shared, CANARY_INTERVAL, CANARY_STALL, COMMAND_TIMEOUT};
use crate::source::{LastEvent, NotReady};

/// Publishes the canary, keeps the gauges fresh, and reconnects a silent subscription.
pub(super) async fn canary(
    shared: Shared,
    subscriber: Client,
    publisher: Client,
    last_event: Arc<LastEvent>,
    forced: Arc<std::sync::atomic::AtomicBool>,
) {
    let Shared { hub, canary_suffix, shutdown, .. } = &shared;
    let mut ticks = tokio::time::interval(CANARY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_forced = Instant::now();
    let mut sequence: u64 = 0;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        sequence += 1;
        if publisher.is_connected() {
            let published = command(publisher.publish::<i64, _, _>(canary_suffix.as_str(), sequence.to_string())).await;
            if let Err(error) = published {
                reconnect_if_replica(&publisher, &error);
            }
        }
        let ready = readiness(&subscriber, &last_event);
        hub.metrics.redis_connected.set(ready.is_ok() as i64);
        hub.metrics.source_up.set(ready.is_ok() as i64);
        if let Some(at) = last_event.get() {
            hub.metrics.source_last_event_age_seconds.set(at.elapsed().as_secs_f64());
        }
        if let Err(NotReady::SubscriptionSilent(age)) = ready {
            if age >= CANARY_STALL && last_forced.elapsed() >= CANARY_STALL {
                tracing::warn!(?age, "redis subscription silent; forcing a reconnect");
                forced.store(true, std::sync::atomic::Ordering::Relaxed);
                last_forced = Instant::now();
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, subscriber.force_reconnection()).await;
            }
        }
    }
}
