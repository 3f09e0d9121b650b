//! Fan-out from the embedded broker: many clients over several channels each get every event
//! of their channels exactly once, in order; subscribing and unsubscribing by message.

use std::collections::HashMap;

use serde_json::json;

use super::receive_events;
use crate::common::*;

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

/// The two write paths meet mid-stream: a client whose socket fills while events keep coming
/// (the flusher's writes stop at the full socket, its own writer takes over and waits) and
/// then drains (the writer sends what queued up meanwhile, and the flusher writes the events
/// after) gets every event exactly once and in order across both switches, and a client on the
/// same channel that reads all along gets them too, while the other is stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_fills_and_drains_loses_and_reorders_nothing() {
    let hub = HubProcess::start(&[]);
    // A 4 KiB receive buffer: the socket fills after a few events of 4 KB.
    let mut stuck = RawClient::connect(hub.public, "?channels=switch", Some(4096)).await;
    let (opcode, reply) = stuck.read_frame().await.expect("the subscribed reply");
    assert_eq!(opcode, 1);
    assert!(String::from_utf8_lossy(&reply).contains("subscribed"));
    let mut reader = hub.subscriber(&["switch"]).await;
    let reading = tokio::spawn(async move { receive_events(&mut reader, 400).await });

    // Publish until a write found the stuck client's socket full (bounded), then 40 more that
    // queue behind it: 160 KB, under its queue cap (268 KB by default), so it is never a slow
    // consumer.
    let filler = "x".repeat(4000);
    let mut published = 0u64;
    while hub.metric("mt_stream_sockets_full_total").await < 1.0 {
        assert!(published < 150, "150 events of 4 KB never filled a socket with a 4 KiB receive buffer");
        assert_eq!(hub.publish("switch", &json!({ "n": published, "fill": filler }).to_string()).await.0, 202);
        published += 1;
    }
    for _ in 0..40 {
        assert_eq!(hub.publish("switch", &json!({ "n": published, "fill": filler }).to_string()).await.0, 202);
        published += 1;
    }
    let before_drain = published;

    // The stuck client reads everything queued, then the events published after it drained,
    // which go through the flusher again.
    let mut received = 0u64;
    let next_event = |frame: Option<(u8, Vec<u8>)>| -> u64 {
        let (opcode, payload) = frame.expect("the hub keeps the connection open");
        assert_eq!(opcode, 1, "a text frame");
        let message: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
        message["data"]["n"].as_u64().unwrap_or_else(|| panic!("an event, got {message}"))
    };
    while received < before_drain {
        let n = next_event(stuck.read_frame().await);
        assert_eq!(n, received, "lost, repeated or reordered while the socket was full");
        received += 1;
    }
    for _ in 0..400 - before_drain {
        assert_eq!(hub.publish("switch", &json!({ "n": published }).to_string()).await.0, 202);
        published += 1;
        let n = next_event(stuck.read_frame().await);
        assert_eq!(n, received, "lost, repeated or reordered after the socket drained");
        received += 1;
    }
    assert!(before_drain < 400);
    assert_eq!(received, 400);
    let events = reading.await.unwrap();
    let numbers: Vec<u64> = events.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (0..400).collect::<Vec<_>>(), "the client that kept reading");
    assert_eq!(hub.metric("mt_stream_slow_consumer_disconnects_total").await, 0.0);
}
