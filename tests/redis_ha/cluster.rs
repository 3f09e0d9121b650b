//! Redis Cluster: sharded pub/sub through a primary's death, a slot migration and a hub restart.

use std::time::Duration;

use tokio::task::block_in_place;

use crate::common::cluster::{cli, RedisCluster};
use crate::common::{next_json, wait_for, HubProcess};
use crate::scenario::{Scenario, PREFIX};
use crate::ONE_AT_A_TIME;

/// The sum of `metric` over the series whose labels contain `label`.
fn labelled(exposition: &str, metric: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(metric) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn cluster_client(url: &str) -> fred::clients::Client {
    use fred::prelude::*;
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.expect("the cluster answers");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_lose_nothing_to_a_killed_primary_a_moved_slot_or_a_restarted_hub() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = RedisCluster::start();
    let channels: Vec<String> = (0..100).map(|n| format!("ch-{n:03}")).collect();
    let slots: Vec<u16> = channels.iter().map(|c| cluster.keyslot(&format!("{PREFIX}{c}"))).collect();
    let primaries = cluster.primaries();
    for primary in &primaries {
        assert!(slots.iter().any(|&slot| primary.owns(slot)), "no channel on the primary on port {}", primary.port);
    }
    let mut scenario = Scenario::start(&cluster.url(), channels.clone(), Duration::from_millis(3)).await;
    scenario.wait_published(300).await;

    // 1. A primary killed (SIGKILL) under load; its replica takes over. The publisher holds
    // still for the moment of the kill only, once the replica has every acknowledged write:
    // Redis replicates asynchronously, and a write the replica never got is lost by Redis
    // itself, whatever the hub does.
    let victim = primaries[0].clone();
    scenario
        .paused(|| {
            block_in_place(|| cluster.wait_replicated(victim.port));
            cluster.kill(victim.port);
        })
        .await;
    let shard = format!("127.0.0.1:{}", victim.port);
    let readiness = wait_for("a hub to name the lost primary", || async {
        let (status, body) = scenario.processes[0].admin_get("/readyz").await;
        (status == 503 && body.contains(&shard)).then_some(body)
    })
    .await;
    assert!(readiness.contains("redis shard"), "{readiness}");
    block_in_place(|| cluster.wait_healthy());
    for hub in &scenario.processes {
        hub.wait_ready(200).await;
    }
    scenario.wait_published(300).await;

    // 2. A slot with one of the channels moved to another primary under load.
    let primaries = cluster.primaries();
    let (moved_slot, from) = slots
        .iter()
        .find_map(|&slot| primaries.iter().find(|p| p.owns(slot)).map(|p| (slot, p.clone())))
        .expect("every slot has an owner");
    let to = primaries.iter().find(|p| p.port != from.port).unwrap().clone();
    block_in_place(|| cluster.migrate_slot(moved_slot, &from, &to));
    scenario.wait_published(300).await;

    // 3. A hub killed (SIGKILL) and started again; its clients resume on it.
    scenario.restart_hub(2).await;
    scenario.wait_published(300).await;

    let (_, metrics) = scenario.processes[0].admin_get("/metrics").await;
    assert!(labelled(&metrics, "mt_stream_source_resubscribes_total", "cause=\"failover\"") > 0.0, "{metrics}");
    assert!(labelled(&metrics, "mt_stream_source_resubscribes_total", "cause=\"slot_moved\"") > 0.0, "{metrics}");

    let history = cluster_client(&cluster.url()).await;
    let published = scenario.published.lock().unwrap().acked.len();
    let (checked, reconnects) = scenario.finish(&history).await;
    assert!(published >= 1200, "only {published} publishes acknowledged");
    // Each event reaches three clients (one per hub).
    assert!(checked >= 3 * 1200, "only {checked} events checked");
    assert!(reconnects >= 3, "the restarted hub's three clients reconnected ({reconnects})");
}

/// Redis drops a shard channel's subscription with an unsolicited `sunsubscribe` when its slot
/// moves to another primary, and the client library swallows that message: only the hub's
/// comparison of slot owners notices. Without it this channel would stay silent for good (its
/// primary's canary, in another slot, keeps arriving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_keeps_delivering_after_its_slot_moves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start();
    let hub = HubProcess::start(&[("REDIS_URL", &cluster.url()), ("MT_HISTORY_CHANNELS", "*")]);
    hub.wait_ready(200).await;
    let mut client = hub.subscriber(&["moving"]).await;
    let key = format!("{PREFIX}moving");
    let slot = cluster.keyslot(&key);
    let primaries = cluster.primaries();
    let from = primaries.iter().find(|p| p.owns(slot)).unwrap().clone();
    let to = primaries.iter().find(|p| p.port != from.port).unwrap().clone();
    wait_for("the hub's SSUBSCRIBE on the owner", || async {
        (cli(from.port, &["PUBSUB", "SHARDNUMSUB", &key]).lines().nth(1) == Some("1")).then_some(())
    })
    .await;
    let (status, _) = hub.publish("moving", "1").await;
    assert_eq!(status, 202);
    let before = next_json(&mut client).await;
    assert_eq!(before["data"], 1, "{before}");

    block_in_place(|| cluster.migrate_slot(slot, &from, &to));
    wait_for("the hub's SSUBSCRIBE on the new owner", || async {
        (cli(to.port, &["PUBSUB", "SHARDNUMSUB", &key]).lines().nth(1) == Some("1")).then_some(())
    })
    .await;
    let (status, _) = hub.publish("moving", "2").await;
    assert_eq!(status, 202);
    let after = next_json(&mut client).await;
    assert_eq!(after["data"], 2, "{after}");
    // `mt-stream publish` on a cluster URL: the script's SPUBLISH reaches the slot's owner.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["publish", "moving", "3"])
        .env_clear()
        .env("REDIS_URL", cluster.url())
        .env("MT_HISTORY_CHANNELS", "*")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("published "),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let third = next_json(&mut client).await;
    assert_eq!(third["data"], 3, "{third}");
    assert_eq!(third["id"].as_str(), stdout.trim().strip_prefix("published "), "{third}");
    let (_, metrics) = hub.admin_get("/metrics").await;
    let to_shard = format!("shard=\"127.0.0.1:{}\"", to.port);
    assert_eq!(labelled(&metrics, "mt_stream_source_resubscribes_total", "cause=\"slot_moved\""), 1.0, "{metrics}");
    assert_eq!(labelled(&metrics, "mt_stream_source_resubscribes_total", &to_shard), 1.0, "{metrics}");
}
