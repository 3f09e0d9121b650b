//! History across Redis outages: it survives a Redis crash and restart with AOF, and a dropped
//! subscription (Redis still up) costs live clients nothing, the gap being filled from history.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use serde_json::json;

use super::{assert_recovered, connect_since, events_then_notice, settle, spawn_paced_publisher, Feed, Tracker};
use crate::common::*;

/// History lives in Redis, so with AOF (`appendfsync always`) it survives a Redis crash: 10
/// events published through the hub, Redis killed and restarted on the same port and directory,
/// the hub ready again; a client resuming from the 3rd id gets exactly events 4..10 (same ids)
/// and `recovered: true`, then live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_redis_restart_with_aof() {
    use fred::prelude::*;
    let mut redis = RedisProcess::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let mut live = hub.subscriber(&["durable"]).await;
    wait_numsub(&admin, "mt:durable", 1).await;
    let _ = admin.quit().await;
    for n in 1..=10u64 {
        assert_eq!(hub.publish("durable", &json!({ "n": n }).to_string()).await.0, 202);
    }
    let mut ids = Vec::new();
    for n in 1..=10u64 {
        let event = next_json(&mut live).await;
        assert_eq!(event["data"]["n"].as_u64(), Some(n), "{event}");
        ids.push(event["id"].as_str().expect("an id").to_owned());
    }

    redis.kill();
    hub.wait_ready(503).await;
    redis.restart();
    hub.wait_ready(200).await;

    let mut client = connect_since(hub.public, "durable", &ids[2]).await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 20, |m| m["op"] == "recovered").await);
    let replayed: Vec<(u64, &str)> =
        events.iter().map(|e| (e["data"]["n"].as_u64().unwrap(), e["id"].as_str().unwrap())).collect();
    let expected: Vec<(u64, &str)> = (4..=10u64).map(|n| (n, ids[n as usize - 1].as_str())).collect();
    assert_eq!(replayed, expected, "events 4..10 came back from the AOF");
    assert_recovered(&notice, "durable", &ids[2], 7, None);

    // Live again after the restart, with a newer id.
    assert_eq!(hub.publish("durable", r#"{"n":11}"#).await.0, 202);
    let event = next_json(&mut client).await;
    assert_eq!(event["data"]["n"], 11, "{event}");
    assert!(parse_id(event["id"].as_str().unwrap()) > parse_id(&ids[9]), "{event}");
}

/// A live client loses nothing when the hub's Redis subscription drops while Redis itself stays
/// up (a network blip between pod and Redis): on reconnecting, the hub first fans out, from
/// history, what was published meanwhile, in order, then goes live again without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_blip_loses_nothing_for_live_clients() {
    use fred::prelude::*;
    const TOTAL: u64 = 800;
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    let admin = redis.client().await;
    let mut client = hub.subscriber(&["blip"]).await;
    settle(Some(&admin), "blip").await;
    let published = Arc::new(AtomicU64::new(0));
    let publisher = spawn_paced_publisher(Feed::script(&redis).await, "blip", TOTAL, published.clone());

    let mut tracker = Tracker::new("blip");
    while tracker.next_n < 200 {
        tracker.event(&next_json(&mut client).await);
    }
    // Cut the hub's subscriber connection (the only pub/sub client); Redis keeps running and
    // the publisher keeps publishing.
    let killed: i64 = admin
        .custom(fred::types::CustomCommand::new_static("CLIENT", None, false), vec!["KILL", "TYPE", "pubsub"])
        .await
        .expect("CLIENT KILL answers");
    assert_eq!(killed, 1, "the hub's subscriber connection was cut");
    while tracker.next_n < TOTAL {
        let message = next_json(&mut client).await;
        assert!(message.get("op").is_none(), "only events: {message}");
        tracker.event(&message);
    }
    publisher.join().await;
    assert_eq!(published.load(SeqCst), TOTAL);
    assert!(hub.metric("mt_stream_source_reconnects_total").await >= 1.0);
    let replayed = hub.metric("mt_stream_history_replayed_total").await;
    assert!(replayed > 0.0, "events published during the blip came from history ({replayed})");
}
