//! Which channels a connection reads: public ones without a token, granted ones with it, a
//! `forbidden` error (not a close) for the rest, and the 10 s deadline for a token that is
//! needed and never comes.

use serde_json::json;

use super::jwt::{self, claims};
use super::*;

/// `user:42:*` grants `user:42:<anything>`, never `user:42` or `user:420`; public channels need
/// no grant; a refused channel leaves the others of the same subscribe subscribed; events flow
/// only where subscribed.
#[tokio::test]
async fn grants_at_their_edges() {
    let hub = hmac_hub(&[]);
    let token = jwt::hs256(&claims("42", &["user:42:*", "team:7"], 600));
    let mut client = assert_accepted(&hub, &token).await;
    for (channel, granted) in [
        ("user:42:feed", true),
        ("user:42:", true),
        ("user:42", false),
        ("user:420", false),
        ("user:4", false),
        ("team:7", true),
        ("team:70", false),
        ("town:square", true),
        ("builds", true),
        ("builds2", false),
    ] {
        send_json(&mut client, json!({"op": "subscribe", "channels": [channel]})).await;
        let reply = next_json(&mut client).await;
        if granted {
            assert_eq!(reply, json!({"op": "subscribed", "channels": [channel]}), "{channel}");
        } else {
            assert_eq!(reply["op"], "error", "{channel}: {reply}");
            assert_eq!(reply["code"], "forbidden", "{channel}");
            assert_eq!(reply["channel"], channel);
        }
    }
    // Mixed: the granted one is subscribed, the other refused, in one message.
    send_json(&mut client, json!({"op": "subscribe", "channels": ["user:43:feed", "user:42:inbox"]})).await;
    assert_eq!(next_json(&mut client).await["channel"], "user:43:feed");
    assert_eq!(next_json(&mut client).await, json!({"op": "subscribed", "channels": ["user:42:inbox"]}));
    hub.publish("user:420", r#"{"n":1}"#).await;
    hub.publish("user:42:inbox", r#"{"n":2}"#).await;
    let event = next_json(&mut client).await;
    assert_eq!((event["channel"].as_str(), event["data"]["n"].as_u64()), (Some("user:42:inbox"), Some(2)));
    assert_eq!(hub.metric("mt_stream_forbidden_subscribes_total").await, 6.0);
    // Forbidden subscribes are not bad requests: 40 of them do not close the connection.
    for _ in 0..40 {
        send_json(&mut client, json!({"op": "subscribe", "channels": ["secret"]})).await;
        assert_eq!(next_json(&mut client).await["code"], "forbidden");
    }
    hub.publish("user:42:inbox", r#"{"n":3}"#).await;
    assert_eq!(next_json(&mut client).await["data"]["n"], 3);
}

/// Without a token: public channels only, for as long as the client likes; channels of the
/// query that need a grant wait for the first `auth` (and are then subscribed), or the
/// connection is closed with 4001 after 10 s.
#[tokio::test]
async fn without_a_token() {
    let hub = hmac_hub(&[]);
    let mut public = connect(&hub, "?channels=builds").await;
    assert_eq!(next_json(&mut public).await, json!({"op": "subscribed", "channels": ["builds"]}));
    send_json(&mut public, json!({"op": "subscribe", "channels": ["user:42:feed"]})).await;
    assert_eq!(next_json(&mut public).await["code"], "forbidden");

    let started = std::time::Instant::now();
    let mut waiting = connect(&hub, "?channels=builds,user:42:feed").await;
    let mut late = connect(&hub, "?channels=user:42:feed").await;
    assert_eq!(next_json(&mut waiting).await, json!({"op": "subscribed", "channels": ["builds"]}));
    send_json(&mut waiting, json!({"op": "auth", "token": jwt::hs256(&claims("42", &["user:42:*"], 600))})).await;
    assert_eq!(next_json(&mut waiting).await["op"], "authenticated");
    assert_eq!(next_json(&mut waiting).await, json!({"op": "subscribed", "channels": ["user:42:feed"]}));
    hub.publish("user:42:feed", r#"{"n":1}"#).await;
    assert_eq!(next_json(&mut waiting).await["data"]["n"], 1);

    assert_eq!(close_of(&mut late).await, (4001, "unauthorized: no token within 10 s".to_owned()));
    assert!(started.elapsed() >= std::time::Duration::from_secs(9), "closed after {:?}", started.elapsed());
    assert_eq!(labelled(&hub.admin_get("/metrics").await.1, "mt_stream_auth_failures_total", "missing"), 1.0);
    // The public-only client is still served.
    hub.publish("builds", r#"{"n":2}"#).await;
    assert_eq!(next_json(&mut public).await["data"]["n"], 2);
}

/// With no key configured every channel is public, tokens are ignored (`verified: false`), and
/// `/readyz` says so.
#[tokio::test]
async fn no_key_means_everything_public_with_a_warning() {
    let hub = HubProcess::start(&[]);
    let (status, body) = hub.admin_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("every channel is public"), "{body}");
    let mut client = connect(&hub, "?channels=user:42:feed&token=whatever").await;
    assert_eq!(next_json(&mut client).await, json!({"op": "authenticated", "verified": false}));
    assert_eq!(next_json(&mut client).await, json!({"op": "subscribed", "channels": ["user:42:feed"]}));
    let secured = hmac_hub(&[]);
    assert_eq!(secured.admin_get("/readyz").await, (200, "ready\n".to_owned()));
}
