//! Limits that protect the hub: a stalled client closed with 4008, a silent peer closed after
//! the heartbeat timeout (4000), the connection cap (503 before the upgrade) and a bound on
//! connections that never finish their HTTP request.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::common::*;

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

/// Connections that never finish their HTTP request are bounded: past the cap new connections
/// are closed at once and counted, and the hub serves again once the silent ones go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http_connections_are_bounded() {
    let hub = HubProcess::start(&[]);
    let mut silent = Vec::new();
    for _ in 0..mt_hub::listener::PUBLIC.max_pending {
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
