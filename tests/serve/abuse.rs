//! Clients that abuse the protocol within its rules: a flood of pings whose pongs they never
//! read, a flood of subscribe/unsubscribe messages.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A client that sends pings and never reads their pongs fills its own queue: it is closed
/// with 4008 and counted in `slow_consumer_disconnects_total` like any slow consumer (the
/// count used to miss every close caused by something other than an event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pong_flood_is_a_counted_slow_consumer() {
    let hub = HubProcess::start(&[]);
    let mut flooder = RawClient::connect(hub.public, "", Some(4096)).await;
    for _ in 0..6000 {
        flooder.send_frame(0x9, true, &[b'p'; 125]).await;
    }
    wait_for("the flooder closed as a slow consumer", || async {
        let (_, metrics) = hub.admin_get("/metrics").await;
        (metric_value(&metrics, "mt_stream_connections_closed_total") >= 1.0).then_some(())
    })
    .await;
    let (_, metrics) = hub.admin_get("/metrics").await;
    assert!(metrics.contains(r#"mt_stream_connections_closed_total{reason="slow_consumer"} 1"#), "{metrics}");
    assert_eq!(metric_value(&metrics, "mt_stream_slow_consumer_disconnects_total"), 1.0);
}

/// Subscribe/unsubscribe messages past the per-connection rate get `rate_limited` and are not
/// applied; a client that keeps flooding is closed with 1008 after 32 refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_flood_is_rate_limited() {
    let hub = HubProcess::start(&[]);
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    for i in 0..300 {
        let op = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        // The hub may close the connection before all 300 are sent: stop sending then.
        if client.send(Message::text(json!({"op": op, "channels": ["flood"]}).to_string())).await.is_err() {
            break;
        }
    }
    let mut applied = 0;
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(DEADLINE, client.next()).await.expect("replies in time") {
            Some(Ok(Message::Text(text))) => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                match reply["op"].as_str() {
                    Some("subscribed" | "unsubscribed") => applied += 1,
                    Some("error") => {
                        assert_eq!(reply["code"], "rate_limited", "{reply}");
                        limited += 1;
                    }
                    _ => panic!("unexpected {reply}"),
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1008, "a client that keeps flooding is closed");
    assert!(applied >= 100, "the burst is applied: {applied}");
    assert!(applied < 300 && limited >= 1, "the rest is refused: {applied} applied, {limited} refused");
}
