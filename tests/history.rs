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

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
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

/// One client reads channel `c` while `total` events are published, dropping its connection
/// (no close handshake) after a random number of events `cuts` times, each time coming back
/// with `since` = the last id it received; then it reads to the end.
async fn resume_at_cut_points(
    hub: &HubProcess,
    feed: Feed,
    redis: Option<&fred::clients::Client>,
    total: u64,
    cuts: u64,
    seed: u64,
) {
    const CHANNEL: &str = "c";
    let mut rng = mt_testkit::Rng::from_env("random cut points", seed);
    let mut client = hub.subscriber(&[CHANNEL]).await;
    settle(redis, CHANNEL).await;
    let published = Arc::new(AtomicU64::new(0));
    let publisher = spawn_paced_publisher(feed, CHANNEL, total, published.clone());

    let mut tracker = Tracker::new(CHANNEL);
    let mut since: Option<String> = None;
    let (mut notices, mut notices_required) = (0u64, 0u64);
    for connection in 0..=cuts {
        let last = connection == cuts;
        let remaining = total - tracker.next_n;
        let k = if last { remaining } else { (1 + rng.below(40)).min(remaining) };
        // Every other resume (and the last) reads on until its `recovered` notice; the others
        // are cut after k events, which may be in the middle of the replay.
        let need_notice = since.is_some() && (last || connection % 2 == 0);
        notices_required += u64::from(need_notice);
        let (mut got, mut before_notice, mut noticed) = (0u64, 0u64, false);
        let mut reads = 0u64;
        while got < k || (need_notice && !noticed) {
            reads += 1;
            assert!(reads <= total + 10, "connection {connection}: {reads} messages without finishing");
            let message = next_json(&mut client).await;
            match message["op"].as_str() {
                None => {
                    tracker.event(&message);
                    got += 1;
                    if !noticed {
                        before_notice += 1;
                    }
                }
                Some("recovered") => {
                    let since = since
                        .as_deref()
                        .unwrap_or_else(|| panic!("a recovered notice on a connection without since: {message}"));
                    assert!(!noticed, "two recovered notices on one connection: {message}");
                    assert_recovered(&message, CHANNEL, since, before_notice, None);
                    noticed = true;
                    notices += 1;
                }
                Some(_) => panic!("connection {connection}: unexpected {message}"),
            }
        }
        if last {
            break;
        }
        drop(client); // abruptly: no close handshake
        if connection % 3 == 1 {
            // Let a backlog build before resuming (up to 150 events: more than a history page).
            let target = (tracker.next_n + rng.below(150)).min(total);
            wait_for("the publisher to get ahead", || async { (published.load(SeqCst) >= target).then_some(()) }).await;
        }
        let from = tracker.last_id_text.clone().expect("the first connection received an event");
        client = connect_since(hub.public, CHANNEL, &from).await;
        since = Some(from);
    }
    publisher.join().await;
    assert_eq!(tracker.next_n, total, "every event arrived exactly once, in order");
    assert!(notices >= notices_required, "{notices} recovered notices for {notices_required} resumes that waited");
}

/// With Redis: a client cut off at 50 random points while 1500 events are published through
/// `publish.lua` (one per ms) resumes each time from its last id and ends up with every event
/// exactly once, in order, ids strictly growing; every resume that waited for its `recovered`
/// notice got `recovered: true`, with `replayed` equal to the events before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_50_random_cut_points_redis() {
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let feed = Feed::script(&redis).await;
    resume_at_cut_points(&hub, feed, Some(&admin), 1500, 50, 0x5EED_0001).await;
}

/// The same with the embedded broker (no Redis; events published over the admin endpoint):
/// its in-memory history gives the same exactly-once, in-order resume at 10 random cut points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_10_random_cut_points_embedded() {
    let hub = HubProcess::start(&[]);
    let feed = Feed::Admin(hub.admin);
    resume_at_cut_points(&hub, feed, None, 400, 10, 0x5EED_0002).await;
}

/// A rolling update: two pods share one Redis; 5 clients on pod A while events are published
/// through `publish.lua` throughout. SIGTERM on pod A: each client gets `closing` (code 1001,
/// `last_ids` naming the last id it received) then the 1001 close, reconnects to pod B with that
/// id, gets `recovered: true`, and ends up with every event exactly once, in order. Pod A exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_resumes_on_the_other_pod() {
    const CLIENTS: usize = 5;
    const CHANNEL: &str = "roll";
    let redis = RedisProcess::start();
    let hub_a = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    let hub_b = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub_a.wait_ready(200).await;
    hub_b.wait_ready(200).await;
    let admin = redis.client().await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(hub_a.subscriber(&[CHANNEL]).await);
    }
    wait_numsub(&admin, "mt:roll", 1).await;

    let warmed = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (warmed, resumed, pod_b) = (warmed.clone(), resumed.clone(), hub_b.public);
        tasks.push(tokio::spawn(async move {
            let mut tracker = Tracker::new(CHANNEL);
            // On pod A until the drain: events, then `closing`, then the close frame.
            let closing = loop {
                assert!(tracker.next_n < 100_000, "client {i}: no drain came");
                let message = next_json(&mut client).await;
                match message["op"].as_str() {
                    None => {
                        tracker.event(&message);
                        if tracker.next_n == 50 {
                            warmed.fetch_add(1, SeqCst);
                        }
                    }
                    Some("closing") => break message,
                    Some(_) => panic!("client {i} on pod A: unexpected {message}"),
                }
            };
            assert_eq!(closing["code"], 1001, "client {i}: {closing}");
            let last = tracker.last_id_text.clone().expect("events arrived before the drain");
            assert_eq!(closing["last_ids"][CHANNEL], last.as_str(), "client {i}: closing names the last id: {closing}");
            assert_eq!(close_code(&mut client).await, 1001, "client {i}");

            // On pod B, from the last id received.
            let mut client = connect_since(pod_b, CHANNEL, &last).await;
            let (mut before_notice, mut noticed) = (0u64, false);
            loop {
                assert!(tracker.next_n < 100_000, "client {i}: the last event never came");
                let message = next_json(&mut client).await;
                match message["op"].as_str() {
                    None => {
                        tracker.event(&message);
                        if !noticed {
                            before_notice += 1;
                        }
                        if message["data"]["last"] == true {
                            break;
                        }
                    }
                    Some("recovered") => {
                        assert!(!noticed, "client {i}: two recovered notices: {message}");
                        assert_recovered(&message, CHANNEL, &last, before_notice, None);
                        noticed = true;
                        resumed.fetch_add(1, SeqCst);
                    }
                    Some(_) => panic!("client {i} on pod B: unexpected {message}"),
                }
            }
            assert!(noticed, "client {i}: the recovered notice came before the last event");
            tracker.next_n
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published) = (stop.clone(), published.clone());
        let feed = Feed::script(&redis).await;
        Publisher(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                assert!(n < 60_000, "the publisher was never stopped");
                tick.tick().await;
                feed.publish(CHANNEL, &json!({ "n": n }).to_string()).await;
                n += 1;
                published.store(n, SeqCst);
            }
            feed.publish(CHANNEL, &json!({ "n": n, "last": true }).to_string()).await;
            n + 1
        })))
    };

    // A client task only ends early by panicking (its message is printed above): stop waiting.
    let none_failed = || {
        if let Some(i) = tasks.iter().position(|task| task.is_finished()) {
            panic!("client {i} failed");
        }
    };
    wait_for("every client to get 50 events on pod A", || async {
        none_failed();
        (warmed.load(SeqCst) == CLIENTS).then_some(())
    })
    .await;
    let at_sigterm = published.load(SeqCst);
    hub_a.terminate();
    wait_for("every client to resume on pod B", || async {
        none_failed();
        (resumed.load(SeqCst) == CLIENTS).then_some(())
    })
    .await;
    let at_resume = published.load(SeqCst);
    assert!(at_resume > at_sigterm, "events were published during the drain");
    // Keep publishing a while after the last resume, so live events follow the replays.
    wait_for("100 more events", || async { (published.load(SeqCst) >= at_resume + 100).then_some(()) }).await;
    stop.store(true, SeqCst);
    let total = publisher.join().await;
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("client task"), total, "client {i} got every event exactly once");
    }
    let mut hub_a = hub_a;
    let status = tokio::task::spawn_blocking(move || hub_a.child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "pod A exits 0 after the drain");
}

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

/// History lives in Redis, so with AOF (`appendfsync always`) it survives a Redis crash: 10
/// events published through the hub, Redis killed and restarted on the same port and directory,
/// the hub ready again; a client resuming from the 3rd id gets exactly events 4..10 (same ids)
/// and `recovered: true`, then live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_redis_restart_with_aof() {
    use fred::prelude::*;
    let mut redis = RedisProcess::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let mut live = hub.subscriber(&["durable"]).await;
    wait_numsub(&admin, "mt:durable", 1).await;
    let _ = admin.quit().await;
    for n in 1..=10u64 {
        assert_eq!(hub.publish("durable", &json!({ "n": n }).to_string()).await.0, 202);
    }
    let mut ids = Vec::new();
    for n in 1..=10u64 {
        let event = next_json(&mut live).await;
        assert_eq!(event["data"]["n"].as_u64(), Some(n), "{event}");
        ids.push(event["id"].as_str().expect("an id").to_owned());
    }

    redis.kill();
    hub.wait_ready(503).await;
    redis.restart();
    hub.wait_ready(200).await;

    let mut client = connect_since(hub.public, "durable", &ids[2]).await;
    let (events, notice) = events_then_notice(recv_until(&mut client, 20, |m| m["op"] == "recovered").await);
    let replayed: Vec<(u64, &str)> =
        events.iter().map(|e| (e["data"]["n"].as_u64().unwrap(), e["id"].as_str().unwrap())).collect();
    let expected: Vec<(u64, &str)> = (4..=10u64).map(|n| (n, ids[n as usize - 1].as_str())).collect();
    assert_eq!(replayed, expected, "events 4..10 came back from the AOF");
    assert_recovered(&notice, "durable", &ids[2], 7, None);

    // Live again after the restart, with a newer id.
    assert_eq!(hub.publish("durable", r#"{"n":11}"#).await.0, 202);
    let event = next_json(&mut client).await;
    assert_eq!(event["data"]["n"], 11, "{event}");
    assert!(parse_id(event["id"].as_str().unwrap()) > parse_id(&ids[9]), "{event}");
}

/// Conflation (`MT_CONFLATE_CHANNELS=prices`, queue cap about 164 KiB): a client that stops
/// reading while hundreds of 4 KB prices are published is not closed; when it reads again each
/// event it gets is either the next one or comes right after `skipped` notices whose counts
/// cover exactly the gap (ids: previous < from ≤ to < kept event), at least one event was
/// skipped, delivered + skipped = published, and the newest price arrives last. `from`..`to`
/// name the skipped events: resuming from the id before `from` replays exactly `count` events
/// from `from` to `to`. A stalled client on a non-conflated channel is closed with 4008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_keeps_the_newest_and_says_what_was_skipped() {
    // 100 connections in 64 MiB: a queue cap of about 164 KiB per connection.
    let hub = HubProcess::start(&[
        ("MT_MAX_CONNECTIONS", "100"),
        ("MT_MEMORY_LIMIT", "64Mi"),
        ("MT_CONFLATE_CHANNELS", "prices"),
    ]);
    let mut conflated = RawClient::connect(hub.public, "?channels=prices", Some(4096)).await;
    let mut stalled = RawClient::connect(hub.public, "?channels=firehose", Some(4096)).await;
    for raw in [&mut conflated, &mut stalled] {
        let (opcode, reply) = raw.read_frame().await.expect("a reply");
        let reply: Value = serde_json::from_slice(&reply).expect("JSON");
        assert_eq!((opcode, reply["op"].as_str()), (1, Some("subscribed")), "{reply}");
    }

    // Both stop reading; the same events go to both channels until the firehose client's queue
    // passes the cap (the prices client's queue has passed it too by then).
    let filler = "x".repeat(4000);
    let mut published = 0u64;
    while hub.metric("mt_stream_slow_consumer_disconnects_total").await < 1.0 {
        assert!(published < 5_000, "the stalled client on a non-conflated channel was never closed");
        for _ in 0..20 {
            let event = json!({ "n": published, "fill": filler }).to_string();
            assert_eq!(hub.publish("prices", &event).await.0, 202);
            assert_eq!(hub.publish("firehose", &event).await.0, 202);
            published += 1;
        }
    }
    // Another 400 KB of prices, well past the cap again, then the newest price.
    for _ in 0..100 {
        assert_eq!(hub.publish("prices", &json!({ "n": published, "fill": filler }).to_string()).await.0, 202);
        published += 1;
    }
    assert_eq!(hub.publish("prices", &json!({ "n": published, "last": true }).to_string()).await.0, 202);
    published += 1;
    let total = published;
    assert_eq!(hub.metric("mt_stream_slow_consumer_disconnects_total").await, 1.0, "only the firehose client");

    // The non-conflated client finds the 4008 close (after a `closing` notice, if it gets one).
    let stalled = tokio::spawn(async move {
        for _ in 0..20_000 {
            match stalled.read_frame().await {
                Some((0x8, payload)) => return u16::from_be_bytes([payload[0], payload[1]]),
                Some((0x1, payload)) => {
                    let message: Value = serde_json::from_slice(&payload).expect("JSON");
                    if message["op"] == "closing" {
                        assert_eq!(message["code"], 4008, "{message}");
                    }
                }
                Some(_) => {}
                None => panic!("the stream ended without a close frame"),
            }
        }
        panic!("no close frame in 20000 frames");
    });

    // The conflated client reads again.
    let (mut last_n, mut last_id): (Option<u64>, Option<(u64, u64)>) = (None, None);
    let mut last_id_text: Option<String> = None;
    let (mut pending_count, mut pending_to) = (0u64, None::<(u64, u64)>);
    let (mut delivered, mut skipped, mut notices) = (0u64, 0u64, 0u64);
    // (the id delivered before it, from, to, count) of the first `skipped` notice.
    let mut first_skip: Option<(Option<String>, String, String, u64)> = None;
    let mut finished = false;
    for _ in 0..2 * total + 10 {
        let (opcode, payload) = conflated.read_frame().await.expect("the conflated client is not disconnected");
        match opcode {
            0x1 => {}
            0x9 | 0xA => continue,
            0x8 => panic!("the conflated client was closed: {payload:?}"),
            other => panic!("unexpected opcode {other}"),
        }
        let message: Value = serde_json::from_slice(&payload).expect("JSON");
        match message["op"].as_str() {
            Some("skipped") => {
                assert_eq!(message["channel"], "prices", "{message}");
                let count = message["count"].as_u64().expect("a count");
                assert!(count > 0, "{message}");
                let from_text = message["from"].as_str().expect("from").to_owned();
                let to_text = message["to"].as_str().expect("to").to_owned();
                let (from, to) = (parse_id(&from_text), parse_id(&to_text));
                assert!(from <= to, "{message}");
                if let Some(last) = last_id {
                    assert!(from > last, "skipped events are newer than the last delivered: {message}");
                }
                if let Some(previous_to) = pending_to {
                    assert!(from > previous_to, "{message}");
                }
                if first_skip.is_none() {
                    first_skip = Some((last_id_text.clone(), from_text, to_text, count));
                }
                pending_count += count;
                pending_to = Some(to);
                skipped += count;
                notices += 1;
            }
            Some(_) => panic!("unexpected {message}"),
            None => {
                assert_eq!(message["channel"], "prices", "{message}");
                let id_text = message["id"].as_str().expect("an id").to_owned();
                let id = parse_id(&id_text);
                if let Some(last) = last_id {
                    assert!(id > last, "ids grow: {message}");
                }
                if let Some(to) = pending_to {
                    assert!(id > to, "the kept event is newer than what was skipped: {message}");
                }
                let n = message["data"]["n"].as_u64().expect("a number");
                let expected = last_n.map_or(0, |n| n + 1) + pending_count;
                assert_eq!(n, expected, "every event is delivered or counted just before the next one: {message}");
                (pending_count, pending_to) = (0, None);
                delivered += 1;
                last_n = Some(n);
                last_id = Some(id);
                last_id_text = Some(id_text);
                if message["data"]["last"] == true {
                    finished = true;
                    break;
                }
            }
        }
    }
    assert!(finished, "the newest price arrived");
    assert!(notices >= 1 && skipped > 0, "the lagging client was conflated ({notices} notices)");
    assert_eq!(delivered + skipped, total, "delivered + skipped = published");
    assert_eq!(last_n, Some(total - 1));
    assert_eq!(stalled.await.expect("stalled reader"), 4008);
    assert_eq!(hub.metric("mt_stream_slow_consumer_disconnects_total").await, 1.0);

    // `from`..`to` name the skipped events: a resume from the id before `from` replays them.
    let (before, from, to, count) = first_skip.expect("a skipped notice");
    if let Some(before) = before {
        let mut client = connect_since(hub.public, "prices", &before).await;
        let events = recv_until(&mut client, count as usize + 1, |m| m["id"] == to.as_str()).await;
        assert!(events.iter().all(|m| m.get("op").is_none()), "{events:?}");
        assert_eq!(events[0]["id"], from.as_str(), "the first replayed event is `from`");
        assert_eq!(events.len() as u64, count, "`count` events from `from` to `to`");
    }
}

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

/// A live client loses nothing when the hub's Redis subscription drops while Redis itself stays
/// up (a network blip between pod and Redis): on reconnecting, the hub first fans out, from
/// history, what was published meanwhile, in order, then goes live again without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_blip_loses_nothing_for_live_clients() {
    use fred::prelude::*;
    const TOTAL: u64 = 800;
    let redis = RedisProcess::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url())]);
    let admin = redis.client().await;
    let mut client = hub.subscriber(&["blip"]).await;
    settle(Some(&admin), "blip").await;
    let published = Arc::new(AtomicU64::new(0));
    let publisher = spawn_paced_publisher(Feed::script(&redis).await, "blip", TOTAL, published.clone());

    let mut tracker = Tracker::new("blip");
    while tracker.next_n < 200 {
        tracker.event(&next_json(&mut client).await);
    }
    // Cut the hub's subscriber connection (the only pub/sub client); Redis keeps running and
    // the publisher keeps publishing.
    let killed: i64 = admin
        .custom(fred::types::CustomCommand::new_static("CLIENT", None, false), vec!["KILL", "TYPE", "pubsub"])
        .await
        .expect("CLIENT KILL answers");
    assert_eq!(killed, 1, "the hub's subscriber connection was cut");
    while tracker.next_n < TOTAL {
        let message = next_json(&mut client).await;
        assert!(message.get("op").is_none(), "only events: {message}");
        tracker.event(&message);
    }
    publisher.join().await;
    assert_eq!(published.load(SeqCst), TOTAL);
    assert!(hub.metric("mt_stream_source_reconnects_total").await >= 1.0);
    let replayed = hub.metric("mt_stream_history_replayed_total").await;
    assert!(replayed > 0.0, "events published during the blip came from history ({replayed})");
}
