//! Sentinel: the hubs follow the primary through a `SENTINEL FAILOVER` under load.

use std::time::Duration;

use tokio::task::block_in_place;

use crate::common::cluster::{cli, info_field, SentinelGroup};
use crate::scenario::Scenario;
use crate::ONE_AT_A_TIME;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_lose_nothing_to_a_sentinel_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let group = SentinelGroup::start();
    let channels: Vec<String> = (0..30).map(|n| format!("s-{n:02}")).collect();
    let mut scenario = Scenario::start(&group.url(), channels, Duration::from_millis(3)).await;
    scenario.wait_published(300).await;

    // The publisher holds still while the Sentinels switch the primary over: a write taken by
    // the old primary after its replica was promoted is discarded by Redis when the old one is
    // demoted, whatever the hub does. Delivery, re-subscription and catch-up happen under load.
    let old = group.primary();
    let new = scenario
        .paused(|| {
            block_in_place(|| {
                group.wait_replicated();
                group.failover()
            })
        })
        .await;
    assert_ne!(old, new);
    assert_eq!(info_field(&cli(new, &["INFO", "replication"]), "role").as_deref(), Some("master"));
    for hub in &scenario.processes {
        hub.wait_ready(200).await;
    }
    scenario.wait_published(600).await;

    let history = {
        use fred::prelude::*;
        let client = Builder::from_config(Config::from_url(&group.url()).unwrap()).build().unwrap();
        client.init().await.expect("the sentinels name a primary that answers");
        client
    };
    let published = scenario.published.lock().unwrap().acked.len();
    let (checked, _) = scenario.finish(&history).await;
    assert!(published >= 900, "only {published} publishes acknowledged");
    assert!(checked >= 3 * 900, "only {checked} events checked");
}
