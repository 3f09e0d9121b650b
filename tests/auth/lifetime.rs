//! A token's lifetime on a live connection: `token_expiring` before `exp`, a refresh that
//! extends the connection and withdraws a grant, and the close at `exp` with the `closing`
//! notice.

use serde_json::json;

use super::jwt::{self, claims};
use super::*;

/// A refresh replaces the grants (a dropped one is unsubscribed with a notice) and outlives the
/// first token's `exp`; a refresh for another `sub` is refused.
#[tokio::test]
async fn refresh_extends_and_drops_a_grant() {
    let hub = hmac_hub(&[]);
    let first = jwt::hs256(&claims("42", &["user:42:*", "team:7"], 3));
    let mut client = connect(&hub, &format!("?token={first}&channels=user:42:feed,team:7")).await;
    assert_eq!(next_json(&mut client).await["op"], "authenticated");
    assert_eq!(next_json(&mut client).await, json!({"op": "subscribed", "channels": ["user:42:feed", "team:7"]}));
    // Less than 30 s left: the notice comes at once.
    let expiring = next_json(&mut client).await;
    assert_eq!(expiring["op"], "token_expiring", "{expiring}");
    assert!(expiring["in_seconds"].as_u64().unwrap() <= 3, "{expiring}");

    let second = jwt::hs256(&claims("42", &["user:42:*"], 600));
    send_json(&mut client, json!({"op": "auth", "token": second})).await;
    let reply = next_json(&mut client).await;
    assert_eq!((reply["op"].as_str(), reply["sub"].as_str()), (Some("authenticated"), Some("42")), "{reply}");
    assert!(reply["expires_in"].as_u64().unwrap() > 590, "{reply}");
    assert_eq!(
        next_json(&mut client).await,
        json!({"op": "unsubscribed", "channels": ["team:7"], "reason": "forbidden"})
    );

    // Past the first token's exp, the connection still delivers; the dropped channel does not.
    let past_first_exp = std::time::Instant::now() + std::time::Duration::from_secs(4);
    tokio::time::sleep_until(past_first_exp.into()).await;
    hub.publish("team:7", r#"{"n":0}"#).await;
    hub.publish("user:42:feed", r#"{"n":1}"#).await;
    let event = next_json(&mut client).await;
    assert_eq!((event["channel"].as_str(), event["data"]["n"].as_u64()), (Some("user:42:feed"), Some(1)));

    send_json(&mut client, json!({"op": "auth", "token": jwt::hs256(&claims("43", &["*"], 600))})).await;
    assert_eq!(close_of(&mut client).await, (4001, "unauthorized: refresh for another sub".to_owned()));
}

/// A first token given by message to a connection that had none (public channels only) runs
/// on its own clock: the notice and the close at `exp` come with nothing else sent to wake the
/// connection.
#[tokio::test]
async fn a_token_given_later_expires_on_time() {
    // Pings far apart, so only the token's own clock can end the connection in time.
    let hub = hmac_hub(&[("MT_HEARTBEAT_INTERVAL_MS", "600000")]);
    let mut client = connect(&hub, "?channels=builds").await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    send_json(&mut client, json!({"op": "auth", "token": jwt::hs256(&claims("42", &["user:42:*"], 2))})).await;
    assert_eq!(next_json(&mut client).await["op"], "authenticated");
    assert_eq!(next_json(&mut client).await["op"], "token_expiring");
    assert_eq!(close_of(&mut client).await, (4001, "unauthorized: token expired".to_owned()));
}

/// Without a refresh, at `exp` the client gets `closing` with its last ids, then 4001.
#[tokio::test]
async fn expiry_closes_with_the_last_ids() {
    let hub = hmac_hub(&[]);
    let token = jwt::hs256(&claims("42", &["user:42:*"], 3));
    let mut client = connect(&hub, &format!("?token={token}&channels=user:42:feed")).await;
    assert_eq!(next_json(&mut client).await["op"], "authenticated");
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    assert_eq!(next_json(&mut client).await["op"], "token_expiring");
    hub.publish("user:42:feed", r#"{"n":1}"#).await;
    let event = next_json(&mut client).await;
    let closing = next_json(&mut client).await;
    assert_eq!(closing, json!({"op": "closing", "code": 4001, "last_ids": {"user:42:feed": event["id"]}}));
    assert_eq!(close_of(&mut client).await, (4001, "unauthorized: token expired".to_owned()));
    assert_eq!(labelled(&hub.admin_get("/metrics").await.1, "mt_stream_auth_failures_total", "expired"), 1.0);
}
