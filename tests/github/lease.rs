//! One poller per release: two hubs on one Redis, a lease, and a `kill -9`.

use std::time::{Duration, Instant};

use super::fake::FakeGithub;
use super::*;

const LEASE_SECONDS: u64 = 3;

/// Exactly one of two hubs polls (the other makes no request); when it is killed with
/// SIGKILL the other takes the lease over within the lease time (plus one renewal period) and
/// continues from the stored cursor: a client sees every event of the fake's feed once, in
/// order, across the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poller_and_a_hand_over_without_loss_or_duplicates() {
    let redis = RedisProcess::start();
    let fake = FakeGithub::start().await;
    fake.live("/repos/Monkeytown/web/events", 5000);
    let env = [
        ("REDIS_URL", redis.url()),
        ("MT_GITHUB_REPOS", "Monkeytown/web".to_owned()),
        ("MT_GITHUB_API_URL", fake.url()),
        ("MT_GITHUB_LEASE_SECONDS", LEASE_SECONDS.to_string()),
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hubs = [HubProcess::start(&env), HubProcess::start(&env)];
    let leader = wait_for("one hub holding the lease", || async {
        let a = hubs[0].metric("mt_stream_github_poller_leader").await;
        let b = hubs[1].metric("mt_stream_github_poller_leader").await;
        match (a, b) {
            (1.0, 0.0) => Some(0),
            (0.0, 1.0) => Some(1),
            (1.0, 1.0) => panic!("both hubs hold the lease"),
            _ => None,
        }
    })
    .await;
    let [first, second] = hubs;
    let (mut leader, follower) = if leader == 0 { (first, second) } else { (second, first) };
    let mut client = follower.subscriber(&["github:monkeytown.web"]).await;
    wait_numsub(&redis.client().await, "mt:github:monkeytown.web", 1).await;

    let mut received = events(&mut client, 3).await;
    assert_eq!(follower.metric("mt_stream_github_requests_total").await, 0.0, "only the lease holder polls");
    assert!(leader.metric("mt_stream_github_requests_total").await >= 4.0);
    assert_eq!(follower.metric("mt_stream_github_poller_leader").await, 0.0);

    leader.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    leader.child.wait().unwrap();
    wait_for("the follower taking the lease over", || async {
        (follower.metric("mt_stream_github_poller_leader").await == 1.0).then_some(())
    })
    .await;
    let took = killed.elapsed();
    let bound = Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(LEASE_SECONDS) / 3 + Duration::from_secs(1);
    assert!(took <= bound, "took over after {took:?}, more than the lease allows ({bound:?})");

    received.extend(events(&mut client, 3).await);
    let ids: Vec<u64> = received.iter().map(|e| e["data"]["github_id"].as_str().unwrap().parse().unwrap()).collect();
    let first_id = ids[0];
    assert_eq!(ids, (first_id..first_id + 6).collect::<Vec<u64>>(), "every event once, in order, across the hand-over");
    assert!(first_id > 5000, "the first poll only sets where polling starts");
}
