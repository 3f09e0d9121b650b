//! Bad and old ids get the documented answers, with Redis and with the embedded broker:
//! malformed, trimmed, future and unkept ids, a kept channel without a stream, and a resume
//! within history.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{assert_recovered, connect_since, events_then_notice, settle};
use crate::common::*;

/// The checks of [`bad_and_old_ids_get_clear_answers`] on one hub (started with
/// `MT_HISTORY_MAX_EVENTS=5`, `MT_HISTORY_CHANNELS=kept.*`).
async fn bad_and_old_ids(hub: &HubProcess, redis: Option<&fred::clients::Client>) {
    // A malformed since in the query is refused before the upgrade.
    for bad in ["yesterday", "12-ab", "-5", "1-2-3"] {
        let refused = tokio_tungstenite::connect_async(hub.ws_url(&format!("?channels=kept.a&since={bad}")))
            .await
            .expect_err("a malformed since in the query is refused");
        assert!(
            matches!(refused, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 400),
            "since={bad}: {refused}"
        );
    }

    // 20 events on a channel that keeps 5.
    let mut collector = hub.subscriber(&["kept.a"]).await;
    settle(redis, "kept.a").await;
    for n in 0..20u64 {
        assert_eq!(hub.publish("kept.a", &json!({ "n": n }).to_string()).await.0, 202);
    }
    let mut ids = Vec::new();
    for n in 0..20u64 {
        let event = next_json(&mut collector).await;
        assert_eq!(event["data"]["n"].as_u64(), Some(n), "{event}");
        let id = event["id"].as_str().expect("an id").to_owned();
        parse_id(&id);
        ids.push(id);
    }

    // From the first id: what history still holds (the last 5), then `history truncated`.
    let mut client = connect_since(hub.public, "kept.a", &ids[0]).await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 10, |m| m["op"] == "recovered").await);
    let replayed: Vec<(u64, &str)> =
        events.iter().map(|e| (e["data"]["n"].as_u64().unwrap(), e["id"].as_str().unwrap())).collect();
    let expected: Vec<(u64, &str)> = (15..20u64).map(|n| (n, ids[n as usize].as_str())).collect();
    assert_eq!(replayed, expected, "the last 5 events are replayed");
    assert_recovered(&notice, "kept.a", &ids[0], 5, Some("history truncated"));

    // From an id history still holds (the `since` string form of subscribe): recovered.
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    send_json(&mut client, json!({"op":"subscribe","channels":["kept.a"],"since": ids[16]})).await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    let (events, notice) = events_then_notice(recv_until(&mut client, 10, |m| m["op"] == "recovered").await);
    let replayed: Vec<(u64, &str)> =
        events.iter().map(|e| (e["data"]["n"].as_u64().unwrap(), e["id"].as_str().unwrap())).collect();
    let expected: Vec<(u64, &str)> = (17..20u64).map(|n| (n, ids[n as usize].as_str())).collect();
    assert_eq!(replayed, expected);
    assert_recovered(&notice, "kept.a", &ids[16], 3, None);

    // A future id, an unkept channel, a kept channel with no stream, and one without since.
    assert_eq!(hub.publish("kept.b", r#"{"n":0}"#).await.0, 202);
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    send_json(
        &mut client,
        json!({
            "op": "subscribe",
            "channels": ["kept.b", "other", "kept.none", "kept.live"],
            "since": {"kept.b": "99999999999999-0", "other": "1-0", "kept.none": "1-0"}
        }),
    )
    .await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    let mut answers: HashMap<String, Value> = HashMap::new();
    for _ in 0..3 {
        let notice = next_json(&mut client).await;
        assert_eq!(notice["op"], "recovered", "nothing is replayed here: {notice}");
        let channel = notice["channel"].as_str().expect("a channel").to_owned();
        assert!(answers.insert(channel, notice.clone()).is_none(), "one notice per channel: {notice}");
    }
    let answer = |channel: &str| answers.get(channel).unwrap_or_else(|| panic!("no notice for {channel}: {answers:?}"));
    assert_recovered(answer("kept.b"), "kept.b", "99999999999999-0", 0, Some("unknown id"));
    assert_recovered(answer("other"), "other", "1-0", 0, Some("no history kept for this channel"));
    assert_recovered(answer("kept.none"), "kept.none", "1-0", 0, Some("history expired"));
    // All four are live afterwards; the one without since got no notice.
    for channel in ["kept.b", "other", "kept.none", "kept.live"] {
        settle(redis, channel).await;
    }
    for (n, channel) in ["kept.live", "kept.b", "other", "kept.none"].into_iter().enumerate() {
        assert_eq!(hub.publish(channel, &json!({ "n": n }).to_string()).await.0, 202);
        let event = next_json(&mut client).await;
        assert_eq!(
            (event["channel"].as_str(), event["data"]["n"].as_u64()),
            (Some(channel), Some(n as u64)),
            "{event}"
        );
        parse_id(event["id"].as_str().expect("an id"));
    }

    // A malformed since in subscribe: `bad_since`, and nothing in that message is subscribed.
    let (mut client, _) = tokio_tungstenite::connect_async(hub.ws_url("")).await.unwrap();
    for (channels, since) in [
        (json!(["kept.a"]), json!({"kept.a": "yesterday"})),
        (json!(["kept.q", "kept.a"]), json!({"kept.a": "12-ab"})),
        (json!(["kept.q"]), json!("-5")),
    ] {
        send_json(&mut client, json!({"op":"subscribe","channels": channels,"since": since})).await;
        let error = next_json(&mut client).await;
        assert_eq!(
            (error["op"].as_str(), error["code"].as_str()),
            (Some("error"), Some("bad_since")),
            "since {since}: {error}"
        );
    }
    send_json(&mut client, json!({"op":"subscribe","channels":["kept.z"]})).await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    settle(redis, "kept.z").await;
    if let Some(redis) = redis {
        assert_eq!(numsub(redis, "mt:kept.q").await, 0, "nobody subscribed kept.q");
    }
    // Published in this order, so had kept.a or kept.q been subscribed they would come first.
    for (channel, n) in [("kept.a", 100), ("kept.q", 101), ("kept.z", 102)] {
        assert_eq!(hub.publish(channel, &json!({ "n": n }).to_string()).await.0, 202);
    }
    let event = next_json(&mut client).await;
    assert_eq!((event["channel"].as_str(), event["data"]["n"].as_u64()), (Some("kept.z"), Some(102)), "{event}");
}

/// Bad and old ids get the documented answers, with Redis and with the embedded broker:
/// malformed `since` → HTTP 400 in the query, `bad_since` (and nothing subscribed) in a message;
/// resuming from a trimmed id (5 kept, 20 published) replays exactly the last 5 then
/// `recovered: false` / `history truncated`; a future id → `unknown id`, 0 replayed; a channel
/// outside `MT_HISTORY_CHANNELS` → `no history kept for this channel`; a kept channel with no
/// stream → `history expired`; a resume within history → `recovered: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_old_ids_get_clear_answers() {
    let settings = [("MT_HISTORY_MAX_EVENTS", "5"), ("MT_HISTORY_CHANNELS", "kept.*")];
    let redis = RedisProcess::start();
    let url = redis.url();
    let with_redis = HubProcess::start(&[settings[0], settings[1], ("REDIS_URL", &url)]);
    with_redis.wait_ready(200).await;
    let admin = redis.client().await;
    bad_and_old_ids(&with_redis, Some(&admin)).await;

    let embedded = HubProcess::start(&settings);
    bad_and_old_ids(&embedded, None).await;
}
