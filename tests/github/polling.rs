//! The poller against the fake API (embedded broker: the one process polls).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fake::{FakeGithub, Reply, Seen};
use super::*;

const EVENTS: &str = "/repos/Monkeytown/web/events?per_page=100";
const CHANNEL: &str = "github:monkeytown.web";

/// A hub polling `Monkeytown/web` on `fake`, with `extra` settings.
fn polling_hub(fake: &FakeGithub, extra: &[(&str, &str)]) -> HubProcess {
    let url = fake.url();
    let mut env = vec![
        ("MT_GITHUB_REPOS", "Monkeytown/web"),
        ("MT_GITHUB_API_URL", url.as_str()),
        ("GITHUB_TOKEN", GITHUB_TOKEN),
    ];
    env.extend_from_slice(extra);
    HubProcess::start(&env)
}

/// Scripts the first poll (the target's newest event is `first`: where it starts, nothing
/// published) and 304s after it, starts the hub, subscribes a client, and waits until the
/// first 304 is served: later scripted replies are answered to a poller whose client listens.
async fn started(fake: &FakeGithub, first: u64, extra: &[(&str, &str)]) -> (HubProcess, Client) {
    fake.fallback(EVENTS, Reply::new(304, "").header("x-poll-interval", 1));
    fake.script(
        EVENTS,
        [Reply::events(&[api_event(first, "before")]).header("etag", "\"e1\"").header("x-poll-interval", 1)],
    );
    let hub = polling_hub(fake, extra);
    let client = hub.subscriber(&[CHANNEL]).await;
    fake.wait_requests(EVENTS, 2).await;
    (hub, client)
}

/// The gap between two requests, from the fake's clock.
fn gap(a: &Seen, b: &Seen) -> Duration {
    b.at.duration_since(a.at)
}

/// At least `expected` (a timer never fires early; 5 ms for clock reads).
fn at_least(actual: Duration, expected: Duration, what: &str) {
    assert!(actual + Duration::from_millis(5) >= expected, "{what}: {actual:?} < {expected:?}");
}

fn issue_numbers(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["data"]["number"].as_u64().expect("an issue number")).collect()
}

/// The first answer's ETag goes back as `If-None-Match`; a 304 publishes nothing; a 200 with
/// a new ETag publishes what is newer than the cursor, oldest first; the next requests carry the
/// new ETag and wait the `X-Poll-Interval` GitHub gives, also when it grows; the token goes
/// along as a bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_then_304_and_a_growing_poll_interval() {
    let fake = FakeGithub::start().await;
    let (hub, mut client) = started(&fake, 100, &[]).await;
    let before = fake.seen_for(EVENTS).len();
    fake.script(
        EVENTS,
        [Reply::events(&[api_event(102, "second"), api_event(101, "first"), api_event(100, "before")])
            .header("etag", "\"e2\"")
            .header("x-poll-interval", 1)],
    );
    fake.fallback(EVENTS, Reply::new(304, "").header("x-poll-interval", 3));
    let received = events(&mut client, 2).await;
    assert_eq!(issue_numbers(&received), [101, 102]);
    assert_eq!(received[0]["data"]["title"], "first");
    assert_eq!(received[0]["data"]["type"], "issues");
    assert_eq!(received[0]["data"]["via"], "poll");
    assert_eq!(received[0]["data"]["github_id"], "101");
    assert_eq!(received[0]["data"]["created_at"], "2026-11-30T08:00:00Z");

    let seen = fake.wait_requests(EVENTS, before + 3).await;
    let etags: Vec<Option<&str>> = seen.iter().map(|s| s.if_none_match.as_deref()).collect();
    assert_eq!(etags[0], None, "the first request has no ETag to send");
    assert!(etags[1..before + 1].iter().all(|e| *e == Some("\"e1\"")), "{etags:?}");
    assert!(etags[before + 1..].iter().all(|e| *e == Some("\"e2\"")), "{etags:?}");
    let expected = format!("Bearer {GITHUB_TOKEN}");
    assert!(seen.iter().all(|s| s.authorization.as_deref() == Some(expected.as_str())));
    at_least(gap(&seen[before - 1], &seen[before]), Duration::from_secs(1), "X-Poll-Interval 1");
    at_least(gap(&seen[before + 1], &seen[before + 2]), Duration::from_secs(3), "X-Poll-Interval grown to 3");

    // Nothing was published twice: the next event is the next one.
    fake.script(EVENTS, [Reply::events(&[api_event(103, "third"), api_event(102, "second")]).header("etag", "\"e3\"")]);
    assert_eq!(issue_numbers(&events(&mut client, 1).await), [103]);
    assert!(sample(&hub, "mt_stream_github_requests_total{status=\"304\"}").await >= 2.0);
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An exhausted rate limit (403, `x-ratelimit-remaining: 0`) pauses polling until
/// `x-ratelimit-reset`; a 429 with `Retry-After` waits as long; then polling resumes and
/// publishes what it missed. Readiness stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_retry_after() {
    let fake = FakeGithub::start().await;
    let (hub, mut client) = started(&fake, 100, &[]).await;
    let before = fake.seen_for(EVENTS).len();
    let reset = epoch_seconds(SystemTime::now()) + 3;
    fake.script(
        EVENTS,
        [
            Reply::new(403, r#"{"message":"API rate limit exceeded"}"#)
                .header("x-ratelimit-remaining", 0)
                .header("x-ratelimit-reset", reset),
            Reply::new(429, r#"{"message":"secondary rate limit"}"#).header("retry-after", 2),
            Reply::events(&[api_event(101, "after the limits"), api_event(100, "before")])
                .header("etag", "\"e2\"")
                .header("x-ratelimit-remaining", 4999),
        ],
    );
    fake.wait_requests(EVENTS, before + 1).await;
    hub.wait_ready(200).await;
    assert_eq!(issue_numbers(&events(&mut client, 1).await), [101]);
    let seen = fake.seen_for(EVENTS);
    let (limited, retried, resumed) = (&seen[before], &seen[before + 1], &seen[before + 2]);
    assert!(epoch_seconds(retried.wall) >= reset, "no request before the rate limit's reset");
    at_least(gap(retried, resumed), Duration::from_secs(2), "Retry-After 2");
    assert_eq!(limited.if_none_match.as_deref(), Some("\"e1\""));
    assert_eq!(sample(&hub, "mt_stream_github_requests_total{status=\"403\"}").await, 1.0);
    assert_eq!(sample(&hub, "mt_stream_github_requests_total{status=\"429\"}").await, 1.0);
    assert_eq!(hub.metric("mt_stream_github_rate_limit_remaining").await, 4999.0);
    hub.wait_ready(200).await;
}

/// 500s back off (the interval doubled per failure in a row), are logged once (not per
/// request), never make the pod unready, and the token appears in no log line, metric or
/// readiness answer; then polling recovers without losing the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_back_off_and_the_token_stays_secret() {
    let fake = FakeGithub::start().await;
    let (hub, mut client) = started(&fake, 100, &[]).await;
    let before = fake.seen_for(EVENTS).len();
    let failure = || Reply::new(500, r#"{"message":"Server Error"}"#);
    fake.script(
        EVENTS,
        [
            failure(),
            failure(),
            Reply::events(&[api_event(101, "after the outage"), api_event(100, "before")]).header("etag", "\"e2\""),
        ],
    );
    fake.wait_requests(EVENTS, before + 1).await;
    let (status, readiness) = hub.admin_get("/readyz").await;
    assert_eq!(status, 200, "GitHub failing is not the pod's fault: {readiness}");
    assert_eq!(issue_numbers(&events(&mut client, 1).await), [101]);
    let seen = fake.seen_for(EVENTS);
    at_least(gap(&seen[before], &seen[before + 1]), Duration::from_secs(2), "first backoff");
    at_least(gap(&seen[before + 1], &seen[before + 2]), Duration::from_secs(4), "second backoff");
    assert_eq!(sample(&hub, "mt_stream_github_requests_total{status=\"5xx\"}").await, 2.0);

    wait_for("the recovery's log line", || async {
        hub.logs.lock().unwrap().iter().any(|l| l.contains("GitHub polling works")).then_some(())
    })
    .await;
    let logs = hub.logs.lock().unwrap().clone();
    let failing: Vec<&String> = logs.iter().filter(|l| l.contains("GitHub polling fails")).collect();
    assert_eq!(failing.len(), 1, "one line per change of state: {failing:?}");
    assert!(failing[0].contains("HTTP 500"), "{}", failing[0]);
    assert!(logs.iter().all(|l| !l.contains(GITHUB_TOKEN)), "the token is never logged");
    let (_, metrics) = hub.admin_get("/metrics").await;
    assert!(!metrics.contains(GITHUB_TOKEN) && !readiness.contains(GITHUB_TOKEN));
}

/// More new events than one page: the poller reads on (at most three pages) until it reaches
/// its cursor, and publishes all 300 once, oldest first, although GitHub listed one of them on
/// two pages; it does not read past the cursor; the next poll repeats none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pages_of_100_and_an_event_listed_twice() {
    let fake = FakeGithub::start().await;
    let (_hub, mut client) = started(&fake, 1000, &[]).await;
    let page = |n: u32| format!("/repos/Monkeytown/web/events?per_page=100&page={n}");
    let link = |n: u32| format!("<{}{}>; rel=\"next\", <{}{}>; rel=\"last\"", fake.url(), page(n), fake.url(), page(4));
    let range =
        |from: u64, to: u64| -> Vec<Value> { (to..=from).rev().map(|id| api_event(id, &format!("#{id}"))).collect() };
    fake.script(&page(2), [Reply::events(&range(1201, 1101)).header("link", link(3))]);
    fake.script(&page(3), [Reply::events(&range(1100, 1000)).header("link", link(4))]);
    fake.script(EVENTS, [Reply::events(&range(1300, 1201)).header("etag", "\"e2\"").header("link", link(2))]);
    let received = events(&mut client, 300).await;
    assert_eq!(issue_numbers(&received), (1001..=1300).collect::<Vec<u64>>());
    assert_eq!(fake.seen_for(&page(2)).len(), 1);
    assert_eq!(fake.seen_for(&page(3)).len(), 1);
    assert!(fake.seen_for(&page(4)).is_empty(), "nothing read past the cursor");

    fake.script(EVENTS, [Reply::events(&range(1301, 1299)).header("etag", "\"e3\"")]);
    assert_eq!(issue_numbers(&events(&mut client, 1).await), [1301]);
}

/// A repository whose webhook delivers is not polled until the webhook has been silent for
/// `MT_GITHUB_WEBHOOK_SILENCE_SECONDS`; then polling publishes only what GitHub created after
/// the webhook's last delivery (what came before, the webhook brought).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_pauses_polling_and_polling_fills_only_after_it() {
    let fake = FakeGithub::start().await;
    let extra = [("MT_GITHUB_WEBHOOK_SECRET", SECRET), ("MT_GITHUB_WEBHOOK_SILENCE_SECONDS", "3")];
    let (hub, mut client) = started(&fake, 100, &extra).await;
    assert_eq!(deliver(&hub, "push", "d-1", &fixture("webhook_push.json")).await.0, 202);
    let delivered = std::time::Instant::now();
    assert_eq!(events(&mut client, 1).await[0]["data"]["via"], "webhook");
    let rfc3339 = |offset: i64| {
        let at = epoch_seconds(SystemTime::now()) as i64 + offset;
        let output = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{at}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let mut old = api_event(101, "the webhook brought this");
    old["created_at"] = Value::String(rfc3339(-60));
    let mut new = api_event(102, "after the webhook fell silent");
    new["created_at"] = Value::String(rfc3339(60));
    fake.script(EVENTS, [Reply::events(&[new, old, api_event(100, "before")]).header("etag", "\"e2\"")]);
    let received = events(&mut client, 1).await;
    assert_eq!(issue_numbers(&received), [102]);
    let seen = fake.seen_for(EVENTS);
    // (50 ms for a round that checked just before the delivery and was in flight.)
    let polled_again = seen.iter().find(|s| s.at > delivered + Duration::from_millis(50)).expect("polling resumed");
    at_least(
        polled_again.at.duration_since(delivered),
        Duration::from_secs(3),
        "no polling while the webhook delivers",
    );
}

/// A repository with no events at its first poll publishes its first event when it comes (its
/// cursor starts at nothing, not at "unknown").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_without_events_publishes_its_first_one() {
    let fake = FakeGithub::start().await;
    fake.fallback(EVENTS, Reply::new(304, "").header("x-poll-interval", 1));
    fake.script(EVENTS, [Reply::events(&[]).header("etag", "\"empty\"").header("x-poll-interval", 1)]);
    let hub = polling_hub(&fake, &[]);
    let mut client = hub.subscriber(&[CHANNEL]).await;
    fake.wait_requests(EVENTS, 2).await;
    fake.script(EVENTS, [Reply::events(&[api_event(1, "the very first")]).header("etag", "\"e1\"")]);
    assert_eq!(issue_numbers(&events(&mut client, 1).await), [1]);
}
