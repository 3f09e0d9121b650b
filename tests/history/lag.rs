//! A hub that falls behind its Redis subscription (the connection delivers faster than the
//! hub fans out, as when its CPU is throttled) drops messages from its buffer. No live client
//! may be left with a silent hole: a channel that keeps history catches up from it (its clients
//! get every event, in order), the clients of a channel without history are closed with 1013
//! after a `closing` notice.

use fred::interfaces::LuaInterface as _;
use fred::prelude::*;

use crate::common::*;

const EVENTS: u64 = 40_000;

/// EVALSHA as a raw command (a pipeline has no Lua interface).
fn evalsha() -> fred::types::CustomCommand {
    fred::types::CustomCommand::new_static("EVALSHA", fred::types::ClusterHash::FirstKey, false)
}

/// Publishes `EVENTS` numbered events on `mt:kept` with the publish script (history of 100,000
/// kept), and as many plain PUBLISHes on `mt:loose`, pipelined in order.
async fn burst(redis: &fred::clients::Client) {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/publish.lua")).unwrap();
    let sha: String = redis.script_load(script).await.unwrap();
    for chunk in 0..EVENTS / 1000 {
        let pipeline = redis.pipeline();
        for n in chunk * 1000..(chunk + 1) * 1000 {
            let args =
                vec![sha.clone(), "1".into(), "mt:kept".into(), n.to_string(), "100000".into(), "3600000".into()];
            let _: () = pipeline.custom(evalsha(), args).await.unwrap();
            let _: () = pipeline.publish("mt:loose", n.to_string()).await.unwrap();
        }
        let _: Vec<fred::types::Value> = pipeline.all().await.unwrap();
    }
}

/// Reads a client's events until `EVENTS` of them, or a close; returns the `n`s received, the
/// `closing` notice if one came, and the close code.
async fn read_all(client: &mut RawClient) -> (Vec<u64>, Option<serde_json::Value>, Option<u16>) {
    let mut received = Vec::new();
    let mut closing = None;
    while (received.len() as u64) < EVENTS {
        // A hub that lost events for good sends nothing more: stop after 8 s of silence.
        let Ok(frame) = tokio::time::timeout(std::time::Duration::from_secs(8), client.read_frame()).await else {
            return (received, closing, None);
        };
        match frame {
            Some((0x1, payload)) => {
                let message: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                if message["op"] == "closing" {
                    closing = Some(message);
                } else if let Some(n) = message["data"].as_u64() {
                    received.push(n);
                }
            }
            Some((0x8, payload)) => return (received, closing, Some(u16::from_be_bytes([payload[0], payload[1]]))),
            Some(_) => {}
            None => return (received, closing, None),
        }
    }
    (received, closing, None)
}

/// The hub, confined to one core and stopped while 40,000 events per channel pile up in its
/// Redis connection, then let go: it falls more than its buffer behind and drops messages.
/// Every client of the kept channel still gets all 40,000 in order; every client of the
/// channel without history that missed any is closed with 1013 after a `closing` notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_falls_behind_leaves_no_silent_gap() {
    let redis = RedisProcess::start();
    let url = redis.url();
    // Queues large enough that the test's own clients, reading 40,000 events each on a shared
    // machine, are never slow consumers: only the lag may cost them events.
    let hub = HubProcess::start_on_one_core(&[
        ("REDIS_URL", &url),
        ("MT_HISTORY_CHANNELS", "kept"),
        ("MT_MEMORY_LIMIT", "8Gi"),
        ("MT_MAX_CONNECTIONS", "50"),
    ]);
    hub.wait_ready(200).await;
    let admin = redis.client().await;
    let mut kept = Vec::new();
    for _ in 0..20 {
        kept.push(RawClient::connect(hub.public, "?channels=kept", None).await);
    }
    let mut loose = Vec::new();
    for _ in 0..3 {
        loose.push(RawClient::connect(hub.public, "?channels=loose", None).await);
    }
    wait_numsub(&admin, "mt:kept", 1).await;
    wait_numsub(&admin, "mt:loose", 1).await;

    let pid = hub.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    burst(&admin).await;
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());

    let readers: Vec<_> = kept
        .into_iter()
        .chain(loose)
        .map(|mut client| tokio::spawn(async move { read_all(&mut client).await }))
        .collect();
    let mut results = Vec::new();
    for reader in readers {
        results.push(tokio::time::timeout(6 * DEADLINE, reader).await.expect("clients finish in time").unwrap());
    }
    let lagged = hub.metric("mt_stream_source_lagged_messages_total").await;
    assert!(lagged > 0.0, "the hub must have fallen behind for this test to prove anything");
    for (i, (received, _, close)) in results[..20].iter().enumerate() {
        assert_eq!(*close, None, "kept client {i} was closed");
        assert!(
            received.iter().copied().eq(0..EVENTS),
            "kept client {i}: a gap or a duplicate ({} events)",
            received.len()
        );
    }
    for (i, (received, closing, close)) in results[20..].iter().enumerate() {
        // What it got is a gapless prefix: the hole comes only where it is told of it.
        assert!(received.iter().copied().eq(0..received.len() as u64), "loose client {i}: a silent gap");
        if received.len() as u64 == EVENTS {
            continue;
        }
        assert_eq!(*close, Some(1013), "loose client {i} missed events and must be closed with 1013");
        let notice = closing.as_ref().expect("a closing notice before 1013");
        assert_eq!(notice["code"], 1013, "{notice}");
    }
    eprintln!("messages dropped by the lag: {lagged}");
}
