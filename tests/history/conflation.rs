//! Conflation: a lagging client on a conflated channel keeps the newest event and is told
//! exactly what it skipped (and can replay it), while a stalled client on a non-conflated
//! channel is closed with 4008.

use serde_json::{json, Value};

use super::connect_since;
use crate::common::*;

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
