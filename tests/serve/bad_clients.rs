//! Clients that misbehave: bad input gets error messages or the documented close codes and
//! hurts nobody else, repeated abuse is closed with 1008, and the Origin allow-list refuses
//! other origins.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

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
    // Exactly 9 KiB is allowed (a valid message padded with spaces): room for an auth message.
    let mut padded = json!({"op":"subscribe","channels":["news"]}).to_string();
    padded.push_str(&" ".repeat(9216 - padded.len()));
    client.send(Message::text(padded)).await.unwrap();
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    client.send(Message::text("x".repeat(9217))).await.unwrap();
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

    // The refusal is in the log; a burst of 20 more within the 10 s window adds no line (the
    // metric counts them all), and the start line told which origins are allowed.
    let refusal_lines = || {
        let logs = hub.logs.lock().unwrap();
        logs.iter()
            .filter(|l| {
                l.contains("upgrade refused") && l.contains("reason=\"origin\"") && l.contains("https://evil.dev")
            })
            .count()
    };
    wait_for("the refusal's log line", || async { (refusal_lines() == 1).then_some(()) }).await;
    for _ in 0..20 {
        let mut request = hub.ws_url("").into_client_request().unwrap();
        request.headers_mut().insert("Origin", "https://evil.dev".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect_err("foreign origin");
    }
    assert_eq!(hub.metric("mt_stream_connections_rejected_total").await, 21.0);
    assert_eq!(refusal_lines(), 1, "one line per reason per 10 s");
}
