//! `mt-stream serve` end to end: the real binary, real WebSocket clients, the embedded broker
//! and a private redis-server.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Receives `count` events and returns (channel, data.n) pairs in arrival order.
async fn receive_events(client: &mut Client, count: usize) -> Vec<(String, u64)> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = next_json(client).await;
        let channel = message["channel"].as_str().expect("an event").to_owned();
        let id = message["id"].as_str().unwrap();
        let (ms, seq) = id.split_once('-').expect("ids are <ms>-<seq>");
        assert!(ms.parse::<u64>().unwrap() > 0 && seq.parse::<u64>().is_ok(), "{id}");
        events.push((channel, message["data"]["n"].as_u64().unwrap()));
    }
    events
}

/// 200 clients over 4 channels each receive every event of their channels exactly once, in
/// publish order, from the embedded broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_200_clients_embedded() {
    let hub = HubProcess::start(&[]);
    let channels = ["alpha", "beta", "gamma", "delta"];
    let mut clients = Vec::new();
    for i in 0..200 {
        // Each client listens to two neighbouring channels.
        let mine = [channels[i % 4], channels[(i + 1) % 4]];
        clients.push((mine, hub.subscriber(&mine).await));
    }
    const PER_CHANNEL: u64 = 25;
    for n in 0..PER_CHANNEL {
        for channel in channels {
            let (status, body) = hub.publish(channel, &json!({ "n": n }).to_string()).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let mut tasks = Vec::new();
    for (mine, mut client) in clients {
        tasks.push(tokio::spawn(async move {
            let events = receive_events(&mut client, 2 * PER_CHANNEL as usize).await;
            let mut next: HashMap<String, u64> = HashMap::new();
            for (channel, n) in events {
                assert!(mine.contains(&channel.as_str()), "got {channel}, subscribed to {mine:?}");
                let expected = next.entry(channel.clone()).or_insert(0);
                assert_eq!(n, *expected, "channel {channel}: out of order, lost or duplicated");
                *expected += 1;
            }
            assert!(next.values().all(|&n| n == PER_CHANNEL));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(hub.metric("mt_stream_deliveries_total").await, 200.0 * 2.0 * PER_CHANNEL as f64);
}

/// Subscribing and unsubscribing by message changes what a client receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_by_message() {
    let hub = HubProcess::start(&[]);
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    send_json(&mut client, json!({"op":"subscribe","channels":["a","b"]})).await;
    assert_eq!(next_json(&mut client).await, json!({"op":"subscribed","channels":["a","b"]}));
    hub.publish("b", r#"{"n":1}"#).await;
    let event = next_json(&mut client).await;
    assert_eq!((event["channel"].as_str(), event["data"]["n"].as_u64()), (Some("b"), Some(1)));

    send_json(&mut client, json!({"op":"unsubscribe","channels":["b"]})).await;
    assert_eq!(next_json(&mut client).await, json!({"op":"unsubscribed","channels":["b"]}));
    // Published in this order, so had "b" still been delivered it would come first.
    hub.publish("b", r#"{"n":2}"#).await;
    hub.publish("a", r#"{"n":3}"#).await;
    let event = next_json(&mut client).await;
    assert_eq!((event["channel"].as_str(), event["data"]["n"].as_u64()), (Some("a"), Some(3)));
    // Text payloads arrive as JSON strings.
    hub.publish("a", "plain text").await;
    assert_eq!(next_json(&mut client).await["data"], "plain text");
}

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
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
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
    // Connections survive the outage: each still answers a request.
    for client in &mut clients {
        send_json(client, json!({"op":"subscribe","channels":["jobs"]})).await;
        assert_eq!(next_json(client).await["op"], "subscribed");
    }
    assert_eq!(hub.metric("mt_stream_connections").await, 20.0);

    redis.restart();
    hub.wait_ready(200).await;
    assert_eq!(hub.metric("mt_stream_redis_connected").await, 1.0);
    let publisher = redis.client().await;
    wait_for("resubscription", || async { (numsub(&publisher, "mt:jobs").await == 1).then_some(()) }).await;
    let _: i64 = publisher.publish("mt:jobs", r#"{"n":2}"#).await.unwrap();
    for client in &mut clients {
        assert_eq!(next_json(client).await["data"]["n"], 2);
    }
    assert!(hub.metric("mt_stream_source_reconnects_total").await >= 1.0);
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

/// A client that stops reading is closed with 4008 once its queue passes the budget, while 50
/// others receive every event; the hub's queued bytes return to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_closed_with_4008() {
    // 100 connections in 64 MiB: a queue cap of about 164 KiB per connection.
    let hub = HubProcess::start(&[("MT_MAX_CONNECTIONS", "100"), ("MT_MEMORY_LIMIT", "64Mi")]);
    let mut stalled = RawClient::connect(hub.public, "?channels=firehose", Some(4096)).await;
    let (opcode, reply) = stalled.read_frame().await.unwrap();
    assert_eq!(
        (opcode, serde_json::from_slice::<serde_json::Value>(&reply).unwrap()["op"].clone()),
        (1, json!("subscribed"))
    );

    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut client = hub.subscriber(&["firehose"]).await;
        readers.push(tokio::spawn(async move {
            let mut expected = 0u64;
            loop {
                let message = next_json(&mut client).await;
                if message["data"]["last"] == true {
                    return expected;
                }
                assert_eq!(message["data"]["n"], expected, "a fast client lost or reordered an event");
                expected += 1;
            }
        }));
    }
    let filler = "x".repeat(4000);
    let mut published = 0u64;
    while hub.metric("mt_stream_slow_consumer_disconnects_total").await < 1.0 {
        assert!(published < 5_000, "the stalled client was never disconnected");
        for _ in 0..20 {
            hub.publish("firehose", &json!({ "n": published, "fill": filler }).to_string()).await;
            published += 1;
        }
    }
    // The stalled client reads again and finds the 4008 close after what was in flight.
    let stalled = tokio::spawn(async move { stalled.close_code().await });
    hub.publish("firehose", r#"{"last":true}"#).await;
    for reader in readers {
        assert_eq!(reader.await.unwrap(), published, "every fast client got every event");
    }
    assert_eq!(stalled.await.unwrap(), 4008);
    wait_for("queues empty", || async { (hub.metric("mt_stream_queued_bytes").await == 0.0).then_some(()) }).await;
}

/// A peer that answers no ping is closed with 4000; a peer that answers stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_after_heartbeat_timeout() {
    let hub = HubProcess::start(&[("MT_HEARTBEAT_INTERVAL_MS", "200")]);
    let mut healthy = hub.subscriber(&["x"]).await;
    // tungstenite answers pings while it is being read, so keep reading it throughout.
    let healthy = tokio::spawn(async move {
        let event = next_json(&mut healthy).await;
        (event, healthy)
    });
    let mut silent = RawClient::connect(hub.public, "?channels=x", None).await;
    let mut pings = 0;
    let code = loop {
        match silent.read_frame().await.expect("the hub closes with a frame") {
            (0x9, _) => pings += 1,
            (0x8, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    };
    assert_eq!(code, 4000);
    assert!(pings >= 1, "a ping came before the timeout");
    wait_for("heartbeat timeout counted", || async {
        (hub.metric("mt_stream_heartbeat_timeouts_total").await >= 1.0).then_some(())
    })
    .await;
    // The healthy client survived several intervals and is still served.
    hub.publish("x", r#"{"n":1}"#).await;
    let (event, _healthy) = healthy.await.unwrap();
    assert_eq!(event["data"]["n"], 1);
    assert_eq!(hub.metric("mt_stream_heartbeat_timeouts_total").await, 1.0, "only the silent peer timed out");
}

/// The upgrade past MT_MAX_CONNECTIONS gets 503 with Retry-After before any WebSocket exists;
/// a freed slot admits the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_with_503() {
    let hub = HubProcess::start(&[("MT_MAX_CONNECTIONS", "5")]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(hub.subscriber(&["x"]).await);
    }
    let refused = tokio_tungstenite::connect_async(hub.ws_url("")).await.expect_err("over the cap");
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let reason = hub.wait_ready(503).await;
    assert!(reason.contains("capacity"), "{reason}");
    assert_eq!(hub.metric("mt_stream_connections_rejected_total").await, 1.0);

    let mut first = clients.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    hub.wait_ready(200).await;
    let _sixth = hub.subscriber(&["x"]).await;
}

/// SIGTERM: readiness 503 at once, upgrades refused, clients closed with 1001 spread over the
/// drain window, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let mut hub = HubProcess::start(&[("MT_DRAIN_SECONDS", "2")]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(hub.subscriber(&["x"]).await);
    }
    hub.wait_ready(200).await;
    hub.terminate();
    let reason = hub.wait_ready(503).await;
    assert!(reason.contains("draining"), "{reason}");
    let refused = tokio_tungstenite::connect_async(hub.ws_url("")).await;
    assert!(refused.is_err(), "no upgrades while draining");

    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move { (close_code(&mut client).await, start.elapsed()) }));
    }
    let mut times = Vec::new();
    for task in tasks {
        let (code, at) = task.await.unwrap();
        assert_eq!(code, 1001);
        times.push(at);
    }
    times.sort();
    let spread = times[times.len() - 1] - times[0];
    assert!(spread >= Duration::from_millis(1000), "closes spread over the window, got {spread:?}");
    let status = tokio::task::spawn_blocking(move || hub.child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Bad client input: malformed JSON, bad channel names and binary frames get error messages;
/// a frame over 4 KiB gets 1009, invalid UTF-8 gets 1007; other clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_hurts_nobody() {
    let hub = HubProcess::start(&[]);
    let mut bystander = hub.subscriber(&["news"]).await;

    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    client.send(Message::text("{not json")).await.unwrap();
    let error = next_json(&mut client).await;
    assert_eq!((error["op"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_request")));
    send_json(&mut client, json!({"op":"subscribe","channels":["no spaces"]})).await;
    assert_eq!(next_json(&mut client).await["code"], "bad_channel");
    send_json(&mut client, json!({"op":"shout","channels":["a"]})).await;
    assert_eq!(next_json(&mut client).await["code"], "bad_request");
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "bad_request");
    // Still usable after errors.
    send_json(&mut client, json!({"op":"subscribe","channels":["news"]})).await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    // Exactly 4 KiB is allowed (a valid message padded with spaces).
    let mut padded = json!({"op":"subscribe","channels":["news"]}).to_string();
    padded.push_str(&" ".repeat(4096 - padded.len()));
    client.send(Message::text(padded)).await.unwrap();
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    client.send(Message::text("x".repeat(4097))).await.unwrap();
    assert_eq!(close_code(&mut client).await, 1009);

    let mut raw = RawClient::connect(hub.public, "", None).await;
    raw.send_frame(0x1, true, &[0x7b, 0xff, 0xfe, 0x7d]).await;
    assert_eq!(raw.close_code().await, 1007);

    // A bad query is refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(hub.ws_url("?channels=a%20b")).await.expect_err("bad query");
    assert!(matches!(refused, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 400));

    hub.publish("news", r#"{"n":1}"#).await;
    assert_eq!(next_json(&mut bystander).await["data"]["n"], 1);
    assert!(hub.metric("mt_stream_client_errors_total").await >= 4.0);
}

/// Repeated bad requests close the connection with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_abuse_is_closed_with_1008() {
    let hub = HubProcess::start(&[]);
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    for _ in 0..=mt_hub::session::MAX_BAD_REQUESTS {
        client.send(Message::text("nonsense")).await.unwrap();
    }
    assert_eq!(close_code(&mut client).await, 1008);
}

/// The Origin allow-list refuses other origins with 403 and admits listed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = HubProcess::start(&[("MT_ALLOWED_ORIGINS", "https://monkeytown.dev")]);
    let mut request = hub.ws_url("").into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://evil.dev".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.expect_err("foreign origin");
    assert!(matches!(refused, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 403));
    let mut request = hub.ws_url("").into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://monkeytown.dev".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    assert_eq!(hub.metric("mt_stream_connections_rejected_total").await, 1.0);
}

/// POST /publish needs the bearer token and a valid channel; probes answer; metrics carry every
/// name DESIGN.md lists, in valid exposition format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let hub = HubProcess::start(&[]);
    assert_eq!(hub.admin_get("/healthz").await.0, 200);
    assert_eq!(hub.admin_get("/readyz").await, (200, "ready\n".to_owned()));
    let (status, _) = http(hub.admin, "POST", "/publish/x", &[], b"{}").await;
    assert_eq!(status, 401);
    let (status, _) =
        http(hub.admin, "POST", "/publish/x", &[("Authorization", "Bearer wrong-token-0123456789")], b"{}").await;
    assert_eq!(status, 401);
    assert_eq!(hub.publish("bad%20name", "{}").await.0, 400);
    assert_eq!(hub.publish("fine", "{}").await.0, 202);

    let (status, body) = hub.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "mt_stream_connections",
        "mt_stream_connections_rejected_total",
        "mt_stream_messages_received_total",
        "mt_stream_deliveries_total",
        "mt_stream_slow_consumer_disconnects_total",
        "mt_stream_queued_bytes",
        "mt_stream_heartbeat_timeouts_total",
        "mt_stream_redis_connected",
        "mt_stream_delivery_lag_seconds",
        "mt_stream_queue_depth_bytes",
        "mt_stream_source_last_event_age_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name}"))
                || body.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "missing {name}"
        );
    }
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    assert!(body.trim_end().ends_with("# EOF"));
    assert_eq!(metric_value(&body, "mt_stream_messages_received_total"), 1.0);

    // Publishing over HTTP without a configured token is refused.
    let no_token = HubProcess::start(&[("MT_PUBLISH_TOKEN", "")]);
    assert_eq!(no_token.publish("x", "{}").await.0, 403);
}

/// `mt-stream publish` without Redis goes through a running hub's admin endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_through_admin_endpoint() {
    let hub = HubProcess::start(&[]);
    let mut client = hub.subscriber(&["cli"]).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["publish", "cli", r#"{"n":42}"#, "--admin-addr", &hub.admin.to_string()])
        .env("MT_PUBLISH_TOKEN", TOKEN)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(next_json(&mut client).await["data"]["n"], 42);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args([
            "publish",
            "cli",
            "{}",
            "--admin-addr",
            &hub.admin.to_string(),
            "--publish-token",
            "wrong-token-0123456789",
        ])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
}

/// A bad setting stops start-up with a non-zero exit and a message naming it.
#[test]
fn bad_configuration_stops_start_up() {
    for (key, value) in [
        ("MT_MAX_CONNECTIONS", "lots"),
        ("MT_HEARTBEAT_INTERVAL_MS", "0"),
        ("MT_MEMORY_LIMIT", "1.5Gi"),
        ("MT_LOG_FORMAT", "yaml"),
        ("MT_LISTEN", "not-an-address"),
        ("REDIS_URL", "localhost:6379"),
        ("MT_DRAIN_SECONDS", "-1"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
            .arg("serve")
            .env("MT_LISTEN", "127.0.0.1:0")
            .env("MT_ADMIN_LISTEN", "127.0.0.1:0")
            .env(key, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{key}={value} must stop start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key}={value}: message must name the setting: {stderr}");
    }
}

/// JSON logs are one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"));
    command
        .args(["serve"])
        .env("MT_LISTEN", "127.0.0.1:0")
        .env("MT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("MT_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let record: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    assert_eq!(record["message"], "mt-stream serving");
    assert!(record["public"].as_str().unwrap().starts_with("127.0.0.1:"));
}

/// Connections that never finish their HTTP request are bounded: past the cap new connections
/// are closed at once and counted, and the hub serves again once the silent ones go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http_connections_are_bounded() {
    let hub = HubProcess::start(&[]);
    let mut silent = Vec::new();
    for _ in 0..mt_hub::server::MAX_PENDING_PUBLIC {
        silent.push(tokio::net::TcpStream::connect(hub.public).await.unwrap());
    }
    wait_for("overload rejection", || async {
        // Each attempt past the cap is closed by the hub before any HTTP is read.
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(hub.ws_url(""))).await;
        let refused = !matches!(attempt, Ok(Ok(_)));
        (refused && hub.metric("mt_stream_connections_rejected_total").await >= 1.0).then_some(())
    })
    .await;
    drop(silent);
    wait_for("served again", || async {
        tokio_tungstenite::connect_async(hub.ws_url("?channels=x")).await.ok().map(|_| ())
    })
    .await;
}
