//! Resume after a lost connection: a client cut off at random points (with Redis and with the
//! embedded broker) comes back with its last id each time and ends up with every event exactly
//! once, in order; in a rolling update, clients drained off one pod resume on the other.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{assert_recovered, connect_since, settle, spawn_paced_publisher, Feed, Publisher, Tracker};
use crate::common::*;

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
