//! The GitHub source end to end: the real binary, a private redis-server where pods share
//! state, real WebSocket clients, and an in-process fake GitHub API (`fake`) serving
//! hand-written JSON fixtures (`fixtures/`).
//!
//! - `webhook`: GitHub's signature test vector and a one-bit change, the 401/413/415 answers,
//!   deliveries published once (a redelivery to another pod included), in order, kept in
//!   history and resumable with `since`.
//! - `polling`: ETag 200 then 304, a growing `X-Poll-Interval`, an exhausted rate limit, a
//!   `Retry-After`, 500s with backoff, three pages of 100, an event GitHub lists twice; the
//!   token never in logs, metrics or readiness; readiness untouched by GitHub's trouble; a
//!   webhook pausing polling; a repository without events publishing its first.
//! - `lease`: two hubs on one Redis: one polls; `kill -9` of it and the other takes over
//!   within the lease, with no event skipped or published twice.
//!
//! The waits poll observable state (the fake's request log, metrics, messages) under
//! `DEADLINE`; time is measured only where the behaviour is about time (intervals and
//! backoff, asserted as lower bounds from the fake's own clock).

#[path = "../common/mod.rs"]
mod common;

mod fake;
mod lease;
mod polling;
mod webhook;

use common::*;
use serde_json::Value;

/// The webhook secret of GitHub's documented test vector.
const SECRET: &str = "It's a Secret to Everybody";
/// A token the tests look for where it must not be.
const GITHUB_TOKEN: &str = "ghp_testtoken0123456789abcdefABCDEF";

/// A fixture's text.
fn fixture(name: &str) -> String {
    let path = format!("{}/tests/github/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An Events API `IssuesEvent` (from the fixture) with this id and title.
fn api_event(id: u64, title: &str) -> Value {
    let mut event: Value = serde_json::from_str(&fixture("api_issues_event.json")).unwrap();
    event["id"] = Value::String(id.to_string());
    event["payload"]["issue"]["number"] = Value::from(id);
    event["payload"]["issue"]["title"] = Value::String(title.to_owned());
    event["payload"]["issue"]["html_url"] = Value::String(format!("https://github.com/Monkeytown/web/issues/{id}"));
    event
}

/// `sha256=<hex>` of `body` with `secret`.
fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs a signed delivery of `event` to a hub's public port.
async fn deliver(hub: &HubProcess, event: &str, delivery: &str, body: &str) -> (u16, String) {
    let signature = signature(SECRET, body.as_bytes());
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", signature.as_str()),
        ("User-Agent", "GitHub-Hookshot/test"),
    ];
    http(hub.public, "POST", "/github/webhook", &headers, body.as_bytes()).await
}

/// One labelled sample of a metric (0 when absent).
async fn sample(hub: &HubProcess, series: &str) -> f64 {
    let (_, body) = hub.admin_get("/metrics").await;
    body.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Receives `count` events (skipping `op` messages), each within the deadline.
async fn events(client: &mut Client, count: usize) -> Vec<Value> {
    let mut received = Vec::new();
    while received.len() < count {
        let message = next_json(client).await;
        if message.get("op").is_none() {
            received.push(message);
        }
    }
    received
}
