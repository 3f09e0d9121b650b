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
