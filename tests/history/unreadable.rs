//! Resumes Redis cannot answer from history still end and go live: the largest id there is
//! (which Redis's `XRANGE` refuses as an exclusive start), and a channel whose key under the
//! prefix is not a stream. Before, both retried every 0.5 s for the life of the connection and
//! the channel stayed dead for that client.

use fred::prelude::*;
use serde_json::json;

use super::{assert_recovered, connect_since, events_then_notice, settle};
use crate::common::*;

const LARGEST_ID: &str = "18446744073709551615-18446744073709551615";

/// Every history answer Redis cannot give ends with a `recovered` notice, and the channel then
/// delivers live events: with Redis, and (for the largest id) with the embedded broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_resumes_answer_and_go_live() {
    let redis = RedisProcess::start();
    let url = redis.url();
    let hub = HubProcess::start(&[("REDIS_URL", &url)]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;

    // The largest id: `unknown id`, nothing replayed, then live.
    assert_eq!(hub.publish("big", r#"{"n":0}"#).await.0, 202);
    let mut client = connect_since(hub.public, "big", LARGEST_ID).await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 5, |m| m["op"] == "recovered").await);
    assert!(events.is_empty(), "{events:?}");
    assert_recovered(&notice, "big", LARGEST_ID, 0, Some("unknown id"));
    settle(Some(&admin), "big").await;
    assert_eq!(hub.publish("big", r#"{"n":1}"#).await.0, 202);
    let live = next_json(&mut client).await;
    assert_eq!(live["data"]["n"], 1, "the channel is live after the notice: {live}");

    // A key under the prefix that is not a stream: `history unreadable`, then live (a plain
    // PUBLISH still reaches the channel's subscribers).
    let _: () = admin.set("mt:notastream", "x", None, None, false).await.unwrap();
    let mut client = connect_since(hub.public, "notastream", "1-0").await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 5, |m| m["op"] == "recovered").await);
    assert!(events.is_empty(), "{events:?}");
    assert_recovered(&notice, "notastream", "1-0", 0, Some("history unreadable"));
    settle(Some(&admin), "notastream").await;
    let _: i64 = admin.publish("mt:notastream", json!({"n": 2}).to_string()).await.unwrap();
    let live = next_json(&mut client).await;
    assert_eq!(live["data"]["n"], 2, "the channel is live after the notice: {live}");
    // One read each, no retry loop: the unreadable answers are final.
    assert_eq!(hub.metric("mt_stream_history_errors_total").await, 0.0);
    assert_eq!(hub.metric("mt_stream_resumes_total").await, 2.0);

    // The embedded broker answers the largest id the same way.
    let embedded = HubProcess::start(&[]);
    assert_eq!(embedded.publish("big", r#"{"n":0}"#).await.0, 202);
    let mut client = connect_since(embedded.public, "big", LARGEST_ID).await;
    let (_, notice) = events_then_notice(recv_until(&mut client, 5, |m| m["op"] == "recovered").await);
    assert_recovered(&notice, "big", LARGEST_ID, 0, Some("unknown id"));
    assert_eq!(embedded.publish("big", r#"{"n":1}"#).await.0, 202);
    assert_eq!(next_json(&mut client).await["data"]["n"], 1);
}
