//! The load the high-availability tests run under, and the check at the end.
//!
//! - [`Hubs`]: the hubs' addresses by slot (a restarted hub takes its slot over);
//! - [`spawn_client`]: a WebSocket client on one hub slot, subscribed to its channels, that
//!   reconnects to its slot after every disconnect and resumes each channel after the last id
//!   it received, recording every event (and any duplicate, reordering or failed resume);
//! - [`spawn_publisher`]: publishes round after round on every channel through the hubs'
//!   `POST /publish` (round-robin; a failed publish is only counted), and can be paused;
//! - [`verify`]: each client's events of each channel are exactly that channel's history from
//!   the first event the client saw, once each and in order, and every acknowledged publish is
//!   in history.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::TOKEN;

/// `(public, admin)` address of each hub slot.
pub type Hubs = Arc<Mutex<Vec<(SocketAddr, SocketAddr)>>>;

/// An event id as `(ms, seq)`, comparable.
pub fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an id is <ms>-<seq>");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub events: HashMap<String, Vec<String>>,
    /// Duplicates, events out of order, resumes that did not recover.
    pub violations: Vec<String>,
    pub reconnects: u32,
}

/// A client of hub `slot` on `channels`; runs until `stop` turns true. `seen` is shared so the
/// test can watch progress.
pub fn spawn_client(
    hubs: Hubs,
    slot: usize,
    channels: Vec<String>,
    seen: Arc<Mutex<Received>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: HashMap<String, String> = HashMap::new();
        // Bounded: at most 1200 connection attempts, 50 ms apart when refused.
        'connect: for _attempt in 0..1200 {
            if *stop.borrow() {
                return;
            }
            let public = hubs.lock().unwrap()[slot].0;
            let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_tungstenite::connect_async(format!("ws://{public}/ws")),
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let since: serde_json::Map<String, serde_json::Value> =
                last.iter().map(|(c, id)| (c.clone(), serde_json::Value::String(id.clone()))).collect();
            let subscribe = serde_json::json!({"op": "subscribe", "channels": channels, "since": since});
            if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                continue;
            }
            loop {
                let message = tokio::select! {
                    _ = stop.changed() => return,
                    message = ws.next() => message,
                };
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        seen.lock().unwrap().reconnects += 1;
                        continue 'connect;
                    }
                    Some(Ok(_)) => continue,
                };
                let value: serde_json::Value = serde_json::from_str(&text).expect("the hub sends JSON");
                let mut seen = seen.lock().unwrap();
                match (value["op"].as_str(), value["channel"].as_str(), value["id"].as_str()) {
                    (None, Some(channel), Some(id)) => {
                        if let Some(previous) = last.get(channel) {
                            if parse_id(id) <= parse_id(previous) {
                                seen.violations.push(format!("{channel}: {id} after {previous}"));
                            }
                        }
                        last.insert(channel.to_owned(), id.to_owned());
                        seen.events.entry(channel.to_owned()).or_default().push(id.to_owned());
                    }
                    (Some("recovered"), _, _) if value["recovered"] != true => {
                        seen.violations.push(format!("resume failed: {value}"));
                    }
                    (Some("error"), _, _) => seen.violations.push(format!("error: {value}")),
                    _ => {}
                }
            }
        }
        panic!("client of hub slot {slot} could not stay connected");
    })
}

/// What the publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// `(channel, id)` of every publish a hub acknowledged.
    pub acked: Vec<(String, String)>,
    pub failed: u64,
    /// The last failure's status and body (0: no answer).
    pub last_failure: (u16, String),
}

/// `POST /publish/{channel}` without panicking on a refused connection; the status and body.
async fn try_publish(admin: SocketAddr, channel: &str, body: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let request = format!(
            "POST /publish/{channel} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.get(9..12)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten()
}

/// Publishes on every channel in turn, one publish every `every`, through the hubs in turn,
/// until `stop`; waits while `pause` is true (and says so on `idle`).
pub fn spawn_publisher(
    hubs: Hubs,
    channels: Vec<String>,
    every: Duration,
    published: Arc<Mutex<Published>>,
    mut pause: watch::Receiver<bool>,
    idle: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // Bounded: at most 200k publishes (the tests stop it long before).
        for n in 0..200_000usize {
            if *stop.borrow() {
                return;
            }
            while *pause.borrow() {
                let _ = idle.send(true);
                if pause.changed().await.is_err() {
                    return;
                }
            }
            let _ = idle.send(false);
            ticks.tick().await;
            let channel = &channels[n % channels.len()];
            let admin = {
                let hubs = hubs.lock().unwrap();
                hubs[(n / channels.len()) % hubs.len()].1
            };
            match try_publish(admin, channel, &format!("{{\"n\":{n}}}")).await {
                Some((202, body)) => {
                    let id = body.trim().strip_prefix("published ").expect("a kept channel's publish answers its id");
                    published.lock().unwrap().acked.push((channel.clone(), id.to_owned()));
                }
                other => {
                    let mut published = published.lock().unwrap();
                    published.failed += 1;
                    published.last_failure = other.unwrap_or_default();
                }
            }
        }
    })
}

/// Pauses the publisher and waits until it is between two publishes.
pub async fn pause(pause: &watch::Sender<bool>, idle: &mut watch::Receiver<bool>) {
    pause.send(true).unwrap();
    idle.wait_for(|idle| *idle).await.unwrap();
}

/// The ids in each channel's history stream (`<prefix><channel>`), read through `client`.
pub async fn history_ids(
    client: &fred::clients::Client,
    prefix: &str,
    channels: &[String],
) -> HashMap<String, Vec<String>> {
    use fred::prelude::*;
    let mut history = HashMap::new();
    for channel in channels {
        let entries: Vec<fred::types::Value> =
            client.xrange(format!("{prefix}{channel}"), "-", "+", None).await.expect("XRANGE works");
        let ids = entries
            .into_iter()
            .filter_map(|entry| match entry {
                fred::types::Value::Array(parts) => parts.first().and_then(|id| id.as_string()),
                _ => None,
            })
            .collect();
        history.insert(channel.clone(), ids);
    }
    history
}

/// Every client's events of every one of its channels are that channel's history from the
/// first event the client saw, exactly (once each, in order); every acknowledged publish is in
/// history. Returns how many events were checked.
pub fn verify(
    history: &HashMap<String, Vec<String>>,
    clients: &[(Vec<String>, Received)],
    published: &Published,
) -> usize {
    let mut checked = 0;
    for (index, (channels, received)) in clients.iter().enumerate() {
        assert!(received.violations.is_empty(), "client {index}: {:?}", received.violations);
        for channel in channels {
            let got = received.events.get(channel).cloned().unwrap_or_default();
            let ids = &history[channel];
            let first = got.first().unwrap_or_else(|| panic!("client {index} got nothing on {channel}"));
            let from = ids
                .iter()
                .position(|id| id == first)
                .unwrap_or_else(|| panic!("client {index}: first event {first} of {channel} is not in its history"));
            let expected = &ids[from..];
            if got != expected {
                let missing: Vec<&String> = expected.iter().filter(|id| !got.contains(id)).take(5).collect();
                let extra: Vec<&String> = got.iter().filter(|id| !expected.contains(id)).take(5).collect();
                panic!(
                    "client {index}, {channel}: got {} events, history has {} (missing e.g. {missing:?}, extra e.g. {extra:?})",
                    got.len(),
                    expected.len()
                );
            }
            checked += got.len();
        }
    }
    for (channel, id) in &published.acked {
        assert!(history[channel].contains(id), "acknowledged {channel} {id} is not in history");
    }
    checked
}

/// Whether every client has received, on each of its channels, the newest event of history.
pub fn caught_up(history: &HashMap<String, Vec<String>>, clients: &[(Vec<String>, Arc<Mutex<Received>>)]) -> bool {
    clients.iter().all(|(channels, seen)| {
        let seen = seen.lock().unwrap();
        channels.iter().all(|channel| seen.events.get(channel).and_then(|ids| ids.last()) == history[channel].last())
    })
}
