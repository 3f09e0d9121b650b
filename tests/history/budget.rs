//! What resuming clients can make the hub hold stays inside the pod's memory budget: 100
//! clients resume a channel of 60 KB events and never read. Before pages were bounded in bytes,
//! each stalled resume held a page of 100 events (6 MB), 880 MiB in all at a 256 MiB budget.

use std::time::Duration;

use fred::prelude::*;

use crate::common::*;

/// The hub's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the hub runs");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Redis's count of executed EVALSHA calls (publishes and history reads are both scripts).
async fn script_calls(redis: &fred::clients::Client) -> u64 {
    let info: String = redis.info(Some(fred::types::InfoKind::CommandStats)).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// 100 clients resume 100 events of 60 KB and stop reading: the hub's peak RSS stays under its
/// 256 MiB budget while every one of them has read history (each resume reads at least two
/// pages before it waits: with pages of 100 events each would hold 6 MB instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_resumes_stay_within_the_budget() {
    const BUDGET: u64 = 256 << 20;
    const CLIENTS: u64 = 100;
    let redis = RedisProcess::start();
    let url = redis.url();
    let hub = HubProcess::start(&[("REDIS_URL", &url), ("MT_MEMORY_LIMIT", "256Mi"), ("MT_MAX_CONNECTIONS", "200")]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let payload = format!("\"{}\"", "x".repeat(60_000));
    for _ in 0..100 {
        assert_eq!(hub.publish("big", &payload).await.0, 202);
    }
    let before = script_calls(&admin).await;

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RawClient::connect(hub.public, "?channels=big&since=0-0", Some(4096)).await);
    }
    let pid = hub.child.id();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let peak = peak_rss(pid);
        assert!(peak < BUDGET, "peak RSS {} MiB passed the 256 MiB budget", peak >> 20);
        if script_calls(&admin).await >= before + 2 * CLIENTS {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the resumes did not read history in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak_rss(pid);
    assert!(peak < BUDGET, "peak RSS {} MiB passed the 256 MiB budget", peak >> 20);
    eprintln!("peak RSS with {CLIENTS} stalled resumes: {} MiB", peak >> 20);
    assert_eq!(hub.metric("mt_stream_connections").await, CLIENTS as f64, "nobody was closed");
    drop(clients);
}

/// 100 clients each resume 64 channels; the first one's replay stalls (they do not read), so
/// the other 63 hold their live events while 63,000 are published. What the hub holds for them
/// is charged to each client's cap: its peak RSS stays under a 128 MiB budget (before, each of
/// the 6,300 waiting subscriptions held up to a whole queue cap of events on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_resuming_channels_stay_within_the_budget() {
    const BUDGET: u64 = 128 << 20;
    const CLIENTS: usize = 100;
    const EVENTS_PER_CHANNEL: u64 = 1000;
    let redis = RedisProcess::start();
    let url = redis.url();
    let hub = HubProcess::start(&[("REDIS_URL", &url), ("MT_MEMORY_LIMIT", "128Mi"), ("MT_MAX_CONNECTIONS", "100")]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let script = std::sync::Arc::new(super::publish_script());
    // A backlog on `slow` larger than what the sockets buffer, so its replay stalls.
    let kilobyte = format!("\"{}\"", "x".repeat(1000));
    for _ in 0..300 {
        super::script_publish(&admin, &script, "slow", &kilobyte).await;
    }
    let channels: Vec<String> = std::iter::once("slow".to_owned()).chain((1..64).map(|i| format!("c{i}"))).collect();
    let query = format!("?channels={}&since=0-0", channels.join(","));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RawClient::connect(hub.public, &query, Some(4096)).await);
    }
    for channel in &channels {
        wait_numsub(&admin, &format!("mt:{channel}"), 1).await;
    }
    let received_before = hub.metric("mt_stream_messages_received_total").await;
    eprintln!("RSS once every client is resuming: {} MiB", peak_rss(hub.child.id()) >> 20);

    let mut publishers = Vec::new();
    for channel in &channels[1..] {
        let (admin, script, channel) = (admin.clone(), std::sync::Arc::clone(&script), channel.clone());
        publishers.push(tokio::spawn(async move {
            for n in 0..EVENTS_PER_CHANNEL {
                super::script_publish(&admin, &script, &channel, &n.to_string()).await;
            }
        }));
    }
    let pid = hub.child.id();
    let total = received_before + 63.0 * EVENTS_PER_CHANNEL as f64;
    let deadline = tokio::time::Instant::now() + 3 * DEADLINE;
    loop {
        let peak = peak_rss(pid);
        assert!(peak < BUDGET, "peak RSS {} MiB passed the 128 MiB budget", peak >> 20);
        if hub.metric("mt_stream_messages_received_total").await >= total {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hub did not receive every event in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let peak = peak_rss(pid);
    assert!(peak < BUDGET, "peak RSS {} MiB passed the 128 MiB budget", peak >> 20);
    eprintln!("peak RSS with {CLIENTS} clients resuming 64 channels: {} MiB", peak >> 20);
    drop(clients);
}
