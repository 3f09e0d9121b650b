//! With a private redis-server: fan-out of events published through Redis, subscriptions held
//! only while wanted, clients kept through a Redis restart, and readiness failing while the
//! subscription is silent.

use serde_json::json;

use super::receive_events;
use crate::common::*;

/// With Redis: the hub subscribes to a Redis channel only while a client wants it, and events
/// published by any Redis client reach every subscriber in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_from_redis() {
    use fred::prelude::*;
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let publisher = redis.client().await;
    assert_eq!(numsub(&publisher, "mt:orders").await, 0, "nobody wants it yet");

    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(hub.subscriber(&["orders"]).await);
    }
    wait_for("redis subscription", || async { (numsub(&publisher, "mt:orders").await == 1).then_some(()) }).await;
    for n in 0..100u64 {
        let _: i64 = publisher.publish("mt:orders", json!({ "n": n }).to_string()).await.unwrap();
    }
    for client in &mut clients {
        let events = receive_events(client, 100).await;
        let ns: Vec<u64> = events.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, (0..100).collect::<Vec<_>>());
    }
    // The last client leaving ends the Redis subscription.
    for mut client in clients {
        client.close(None).await.unwrap();
    }
    wait_for("redis unsubscribe", || async { (numsub(&publisher, "mt:orders").await == 0).then_some(()) }).await;

    // `mt-stream publish` and POST /publish go through Redis too.
    let mut client = hub.subscriber(&["orders"]).await;
    wait_for("redis subscription", || async { (numsub(&publisher, "mt:orders").await == 1).then_some(()) }).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["publish", "orders", r#"{"n":7}"#])
        .env("REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(next_json(&mut client).await["data"]["n"], 7);
    assert_eq!(hub.publish("orders", r#"{"n":8}"#).await.0, 202);
    assert_eq!(next_json(&mut client).await["data"]["n"], 8);
}

/// Redis killed mid-stream: clients stay connected, readiness says "redis disconnected", and
/// after Redis is back the hub resubscribes, readiness recovers and delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_clients_and_resumes() {
    use fred::prelude::*;
    let mut redis = RedisProcess::start();
    // The default log level (RUST_LOG empty), as a pod runs.
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url()), ("RUST_LOG", "")]);
    hub.wait_ready(200).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(hub.subscriber(&["jobs"]).await);
    }
    let publisher = redis.client().await;
    wait_for("subscription", || async { (numsub(&publisher, "mt:jobs").await == 1).then_some(()) }).await;
    let _: i64 = publisher.publish("mt:jobs", r#"{"n":1}"#).await.unwrap();
    for client in &mut clients {
        assert_eq!(next_json(client).await["data"]["n"], 1);
    }
    let _ = publisher.quit().await;

    redis.kill();
    let reason = hub.wait_ready(503).await;
    assert!(reason.contains("redis disconnected"), "{reason}");
    assert_eq!(hub.metric("mt_stream_redis_connected").await, 0.0);
    assert_eq!(hub.metric("mt_stream_source_up").await, 0.0);
    // Connections survive the outage: each still answers a request.
    for client in &mut clients {
        send_json(client, json!({"op":"subscribe","channels":["jobs"]})).await;
        assert_eq!(next_json(client).await["op"], "subscribed");
    }
    assert_eq!(hub.metric("mt_stream_connections").await, 20.0);

    redis.restart();
    hub.wait_ready(200).await;
    assert_eq!(hub.metric("mt_stream_redis_connected").await, 1.0);
    assert_eq!(hub.metric("mt_stream_source_up").await, 1.0);
    let publisher = redis.client().await;
    wait_for("resubscription", || async { (numsub(&publisher, "mt:jobs").await == 1).then_some(()) }).await;
    let _: i64 = publisher.publish("mt:jobs", r#"{"n":2}"#).await.unwrap();
    for client in &mut clients {
        assert_eq!(next_json(client).await["data"]["n"], 2);
    }
    // One outage, one reconnect: the re-made subscription is not judged silent by the length
    // of the outage before it (it was, and the canary forced a second reconnect). Watched over
    // four canary intervals after the first event through the new subscription.
    assert_eq!(hub.metric("mt_stream_source_reconnects_total").await, 1.0);
    let watched_until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < watched_until {
        assert_eq!(hub.metric("mt_stream_source_reconnects_total").await, 1.0, "a second reconnect");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let logs = hub.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("forcing a reconnect"), "{logs}");
    // The outage in the hub's words, once each: lost (with the cause), back (after how long);
    // the Redis library's own repeated warnings are not in the default log.
    assert_eq!(logs.matches("redis connection lost").count(), 1, "{logs}");
    assert_eq!(logs.matches("redis connection back").count(), 1, "{logs}");
    assert!(!logs.contains("Broadcasting error"), "{logs}");
}

/// A subscription that is connected but delivers nothing (here: Redis refuses all writes, so
/// no canary arrives) fails readiness as "silent", and recovers once events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_subscription_fails_readiness() {
    use fred::prelude::*;
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let _: fred::types::Value = admin
        .custom(fred::types::CustomCommand::new_static("CLIENT", None, false), vec!["PAUSE", "8000", "WRITE"])
        .await
        .unwrap();
    let reason = hub.wait_ready(503).await;
    assert!(reason.contains("subscription silent"), "{reason}");
    let _: fred::types::Value =
        admin.custom(fred::types::CustomCommand::new_static("CLIENT", None, false), vec!["UNPAUSE"]).await.unwrap();
    hub.wait_ready(200).await;
    assert!(hub.metric("mt_stream_source_last_event_age_seconds").await < 5.0);
}
