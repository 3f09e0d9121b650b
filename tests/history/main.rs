//! Channel history and resume (`docs/history.md`) end to end: the real binary, real WebSocket
//! clients (tokio-tungstenite, plus a raw socket client for a peer that stops reading), a private
//! redis-server per test (events published with `scripts/publish.lua`, as other Monkeytown
//! services do) and the embedded broker.
//!
//! What is proved: a client that drops its connection at any point, or is drained off a pod,
//! and comes back with its last id receives every event exactly once, in order, on the same pod
//! or another one, and across a Redis restart with AOF; malformed, trimmed, future and
//! unkept ids get the documented answers; a lagging client on a conflated channel keeps the
//! newest event and is told exactly what it skipped, while a non-conflated one is closed with
//! 4008; a plain `PUBLISH` still reaches live clients but is not replayed.
//!
//! Nothing sleeps to synchronise: waits poll observable state (published counts, Redis
//! subscriber counts, readiness, metrics) bounded by `DEADLINE`; the publishers' 1 ms pacing is
//! only a rate. Every loop is bounded. The random cut points come from a seeded PRNG; the seed
//! is printed and `MT_TEST_SEED` repeats a run.
//!
//! The tests are grouped by subject, one module each: `resume` (random cut points, a rolling
//! update), `ids` (bad and old ids), `outages` (Redis restarted with AOF, a subscription blip),
//! `conflation`, and `publishing` (`publish.lua`, the CLI, a plain `PUBLISH`). The helpers they
//! share are here.

#[path = "../common/mod.rs"]
mod common;

mod budget;
mod conflation;
mod ids;
mod lag;
mod outages;
mod publishing;
mod resume;
mod unreadable;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Events kept per channel and age limit, as passed to `publish.lua`: the hub's defaults.
const MAX_EVENTS: u64 = 1000;
const MAX_AGE_MS: u64 = 3_600_000;

/// `scripts/publish.lua`, read at run time.
fn publish_script() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/publish.lua");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Publishes `payload` on `channel` with `publish.lua` (EVAL, key `mt:<channel>`); returns the id.
async fn script_publish(redis: &fred::clients::Client, script: &str, channel: &str, payload: &str) -> String {
    use fred::prelude::*;
    let id: String = redis
        .eval(
            script.to_owned(),
            format!("mt:{channel}"),
            vec![payload.to_owned(), MAX_EVENTS.to_string(), MAX_AGE_MS.to_string()],
        )
        .await
        .expect("publish.lua runs and returns the id");
    parse_id(&id);
    id
}

/// Where a test's events come from.
#[derive(Clone)]
enum Feed {
    /// `publish.lua` through Redis, as other Monkeytown services publish.
    Script { redis: fred::clients::Client, script: Arc<String> },
    /// `POST /publish/{channel}` on a hub's admin port.
    Admin(SocketAddr),
}

impl Feed {
    async fn script(redis: &RedisProcess) -> Self {
        Feed::Script { redis: redis.client().await, script: Arc::new(publish_script()) }
    }

    async fn publish(&self, channel: &str, payload: &str) {
        match self {
            Feed::Script { redis, script } => {
                script_publish(redis, script, channel, payload).await;
            }
            Feed::Admin(admin) => {
                let auth = format!("Bearer {TOKEN}");
                let (status, body) = http(
                    *admin,
                    "POST",
                    &format!("/publish/{channel}"),
                    &[("Authorization", &auth)],
                    payload.as_bytes(),
                )
                .await;
                assert_eq!(status, 202, "{body}");
            }
        }
    }
}

/// A spawned publisher, aborted when dropped: a failing test does not leave it publishing into
/// a Redis being torn down (which would add a second, misleading panic to the output).
struct Publisher<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Publisher<T> {
    async fn join(mut self) -> T {
        self.0.take().expect("joined once").await.expect("the publisher finished")
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Publishes `{"n":0}` … `{"n":total-1}` on `channel` at about one a millisecond, storing how
/// many were published in `published`.
fn spawn_paced_publisher(feed: Feed, channel: &'static str, total: u64, published: Arc<AtomicU64>) -> Publisher<()> {
    Publisher(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0..total {
            tick.tick().await;
            feed.publish(channel, &json!({ "n": n }).to_string()).await;
            published.store(n + 1, SeqCst);
        }
    })))
}

/// Waits until Redis has this hub's subscription to `channel` (no-op for the embedded broker,
/// where the `subscribed` reply already means it).
async fn settle(redis: Option<&fred::clients::Client>, channel: &str) {
    if let Some(redis) = redis {
        wait_numsub(redis, &format!("mt:{channel}"), 1).await;
    }
}

/// Follows one channel's numbered events (`{"n":0}`, `{"n":1}`, …) across connections: each
/// must be the next number, with an id greater than the last.
struct Tracker {
    channel: String,
    next_n: u64,
    last_id: Option<(u64, u64)>,
    last_id_text: Option<String>,
}

impl Tracker {
    fn new(channel: &str) -> Self {
        Self { channel: channel.to_owned(), next_n: 0, last_id: None, last_id_text: None }
    }

    fn event(&mut self, message: &Value) {
        assert_eq!(message["channel"], self.channel.as_str(), "{message}");
        let text = message["id"].as_str().unwrap_or_else(|| panic!("an event has a string id: {message}"));
        let id = parse_id(text);
        if let Some(last) = self.last_id {
            assert!(id > last, "ids only grow: {text} after {:?} ({message})", self.last_id_text);
        }
        assert_eq!(
            message["data"]["n"].as_u64(),
            Some(self.next_n),
            "an event lost, duplicated or out of order: {message}"
        );
        self.next_n += 1;
        self.last_id = Some(id);
        self.last_id_text = Some(text.to_owned());
    }
}

/// Checks a `recovered` notice: `reason` `None` means `recovered: true` (and no reason).
fn assert_recovered(notice: &Value, channel: &str, since: &str, replayed: u64, reason: Option<&str>) {
    assert_eq!(notice["op"], "recovered", "{notice}");
    assert_eq!(notice["channel"], channel, "{notice}");
    assert_eq!(notice["since"], since, "{notice}");
    assert_eq!(notice["replayed"].as_u64(), Some(replayed), "replayed counts the events before it: {notice}");
    match reason {
        None => {
            assert_eq!(notice["recovered"], true, "{notice}");
            assert!(notice.get("reason").is_none(), "no reason when recovered: {notice}");
        }
        Some(reason) => {
            assert_eq!(notice["recovered"], false, "{notice}");
            assert_eq!(notice["reason"], reason, "{notice}");
        }
    }
}

/// Connects with `?channels=<channel>&since=<since>` and waits for `subscribed`.
async fn connect_since(public: SocketAddr, channel: &str, since: &str) -> Client {
    let url = format!("ws://{public}/ws?channels={channel}&since={since}");
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.expect("an upgrade with since succeeds");
    let reply = next_json(&mut client).await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    client
}

/// Splits what [`recv_until`] returned for a resume into (events, the `recovered` notice).
fn events_then_notice(mut messages: Vec<Value>) -> (Vec<Value>, Value) {
    let notice = messages.pop().expect("a notice");
    for event in &messages {
        assert!(event.get("op").is_none(), "only events before the notice: {event}");
    }
    (messages, notice)
}
