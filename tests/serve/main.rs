//! `mt-stream serve` end to end: the real binary, real WebSocket clients, the embedded broker
//! and a private redis-server.
//!
//! The tests are grouped by subject, one module each: `fan_out` (the embedded broker),
//! `redis` (fan-out through Redis, outages, a silent subscription), `limits` (slow consumers,
//! heartbeats, connection caps), `bad_clients` (bad input, abuse, origins), `abuse` (pong and
//! subscribe floods), `admission` (the HTTP phase of both listeners: probes under held
//! sockets, refusals that close, the handshake checks, publish authorisation and body
//! timeout) and `operations` (admin endpoints, the publish CLI, configuration, logs, shutdown).

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod admission;
mod bad_clients;
mod fan_out;
mod limits;
mod operations;
mod redis;

use common::*;

/// Receives `count` events and returns (channel, data.n) pairs in arrival order.
async fn receive_events(client: &mut Client, count: usize) -> Vec<(String, u64)> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = next_json(client).await;
        let channel = message["channel"].as_str().expect("an event").to_owned();
        let id = message["id"].as_str().unwrap();
        let (ms, seq) = id.split_once('-').expect("ids are <ms>-<seq>");
        assert!(ms.parse::<u64>().unwrap() > 0 && seq.parse::<u64>().is_ok(), "{id}");
        events.push((channel, message["data"]["n"].as_u64().unwrap()));
    }
    events
}
