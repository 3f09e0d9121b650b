//! The ways events are published and what history keeps of them: `scripts/publish.lua` itself
//! (trimming by count and age), `mt-stream publish` with `REDIS_URL`, and a plain `PUBLISH`
//! that reaches live clients but is not kept.

use serde_json::json;

use super::{assert_recovered, connect_since, events_then_notice, publish_script, settle, MAX_AGE_MS, MAX_EVENTS};
use crate::common::*;

/// A plain `PUBLISH mt:c …` (not the script) still reaches live clients, with an id of the
/// `<ms>-<seq>` form newer than the event before it, but it is not kept: a resume from before it
/// replays only the kept event published after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_publish_still_reaches_live_clients() {
    use fred::prelude::*;
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let mut live = hub.subscriber(&["c"]).await;
    wait_numsub(&admin, "mt:c", 1).await;

    assert_eq!(hub.publish("c", r#"{"n":0}"#).await.0, 202);
    let kept = next_json(&mut live).await;
    assert_eq!(kept["data"]["n"], 0, "{kept}");
    let id0 = kept["id"].as_str().expect("an id").to_owned();

    let _: i64 = admin.publish("mt:c", r#"{"n":1}"#).await.unwrap();
    let plain = next_json(&mut live).await;
    assert_eq!((plain["channel"].as_str(), plain["data"]["n"].as_u64()), (Some("c"), Some(1)), "{plain}");
    let plain_id = parse_id(plain["id"].as_str().expect("an id"));
    assert!(plain_id > parse_id(&id0), "ids grow: {plain} after {id0}");

    assert_eq!(hub.publish("c", r#"{"n":2}"#).await.0, 202);
    let after = next_json(&mut live).await;
    assert_eq!(after["data"]["n"], 2, "{after}");
    let id2 = after["id"].as_str().expect("an id").to_owned();

    let mut client = connect_since(hub.public, "c", &id0).await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 5, |m| m["op"] == "recovered").await);
    let replayed: Vec<(u64, &str)> =
        events.iter().map(|e| (e["data"]["n"].as_u64().unwrap(), e["id"].as_str().unwrap())).collect();
    assert_eq!(replayed, vec![(2, id2.as_str())], "only the kept event is replayed");
    assert_recovered(&notice, "c", &id0, 1, None);
}

/// The stream's `max-deleted-entry-id` and its first kept id, from `XINFO STREAM`.
async fn stream_state(redis: &fred::clients::Client, key: &str) -> (String, String, u64) {
    use fred::prelude::*;
    use fred::types::{ClusterHash, CustomCommand};
    let info: Vec<Value> = redis
        .custom(CustomCommand::new_static("XINFO", ClusterHash::FirstKey, false), vec!["STREAM", key])
        .await
        .expect("XINFO STREAM answers");
    let field = |name: &str| -> Value {
        let at = info.iter().position(|v| v.as_str().as_deref() == Some(name)).unwrap_or_else(|| panic!("{name}"));
        info[at + 1].clone()
    };
    let first = match field("first-entry") {
        Value::Array(entry) => entry[0].as_string().unwrap(),
        other => panic!("first-entry: {other:?}"),
    };
    let length = field("length").as_u64().unwrap();
    (field("max-deleted-entry-id").as_string().unwrap(), first, length)
}

/// `publish.lua` itself: the count limit keeps exactly N and records the newest trimmed id;
/// the age limit trims what is older than the newest event's time minus the limit and records
/// it too; a new stream counts what came before its first event as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_script_trims_by_count_and_age_and_records_it() {
    use fred::prelude::*;
    let redis_process = RedisProcess::start();
    let redis = redis_process.client().await;
    let script = publish_script();
    let publish = |key: &'static str, n: u64, max_events: u64, max_age_ms: u64| {
        let redis = redis.clone();
        let script = script.clone();
        async move {
            let id: String = redis
                .eval(script, key, vec![json!({ "n": n }).to_string(), max_events.to_string(), max_age_ms.to_string()])
                .await
                .expect("publish.lua runs");
            id
        }
    };

    let first = publish("mt:count", 0, 3, MAX_AGE_MS).await;
    assert_eq!(stream_state(&redis, "mt:count").await, (first.clone(), first.clone(), 1), "new stream");
    let mut ids = vec![first];
    for n in 1..6 {
        ids.push(publish("mt:count", n, 3, MAX_AGE_MS).await);
    }
    assert_eq!(stream_state(&redis, "mt:count").await, (ids[2].clone(), ids[3].clone(), 3), "count limit");

    // Age: with a 200 ms limit, publish until the clock has moved past it. (Were the machine to
    // stall longer than the limit between two publishes, the stream would expire and start
    // afresh, recording its first id as deleted: hence `<=` below.)
    const AGE_MS: u64 = 200;
    let old = publish("mt:age", 0, MAX_EVENTS, AGE_MS).await;
    let (old_ms, _) = parse_id(&old);
    let mut newest = old.clone();
    for n in 1..=1_000_000u64 {
        newest = publish("mt:age", n, MAX_EVENTS, AGE_MS).await;
        if parse_id(&newest).0 > old_ms + AGE_MS {
            break;
        }
    }
    let (newest_ms, _) = parse_id(&newest);
    assert!(newest_ms > old_ms + AGE_MS, "the clock moved on");
    let (deleted, first_kept, _) = stream_state(&redis, "mt:age").await;
    assert!(parse_id(&first_kept).0 >= newest_ms - AGE_MS, "nothing older than the limit is kept: {first_kept}");
    assert!(parse_id(&deleted) >= parse_id(&old), "the trimmed ids are recorded: {deleted}");
    assert!(parse_id(&deleted) <= parse_id(&first_kept));
    let ttl: i64 = redis.pttl("mt:age").await.unwrap();
    assert!((0..=AGE_MS as i64).contains(&ttl), "the stream expires with its age limit: {ttl}");
}

/// `mt-stream publish` with `REDIS_URL` publishes with history: it prints the event's id, a
/// live client gets the event with that id, and a client resuming from before it gets it
/// replayed; a channel outside `MT_HISTORY_CHANNELS` gets a plain PUBLISH (no id printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_keeps_history_through_redis() {
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    let redis_client = redis.client().await;
    let mut live = hub.subscriber(&["cli"]).await;
    settle(Some(&redis_client), "cli").await;
    let cli = |channel: &str, data: &str, history_channels: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
            .args(["publish", channel, data])
            .env("REDIS_URL", redis.url())
            .env("MT_HISTORY_CHANNELS", history_channels)
            .output()
            .expect("mt-stream publish runs")
    };
    let first = cli("cli", r#"{"n":0}"#, "*");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = cli("cli", r#"{"n":1}"#, "*");
    let printed = String::from_utf8_lossy(&second.stdout).trim().to_owned();
    let id = printed.strip_prefix("published ").unwrap_or_else(|| panic!("prints the id: {printed}"));
    parse_id(id);
    let first_event = next_json(&mut live).await;
    let second_event = next_json(&mut live).await;
    assert_eq!((second_event["data"]["n"].as_u64(), second_event["id"].as_str()), (Some(1), Some(id)));

    let mut resumed = connect_since(hub.public, "cli", first_event["id"].as_str().unwrap()).await;
    let messages = recv_until(&mut resumed, 10, |m| m["op"] == "recovered").await;
    let (events, notice) = events_then_notice(messages);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"].as_str(), Some(id));
    assert_recovered(&notice, "cli", first_event["id"].as_str().unwrap(), 1, None);

    let plain = cli("cli", r#"{"n":2}"#, "other.*");
    let printed = String::from_utf8_lossy(&plain.stdout);
    assert!(printed.contains("published to redis"), "not kept, so no id: {printed}");
    assert_eq!(next_json(&mut live).await["data"]["n"], 2);
}
