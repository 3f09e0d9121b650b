//! The hub's behaviour through its public methods: fan-out, the resume and catch-up seams,
//! interest, admission and the per-connection channel limit.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mt_budget::Budget;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::*;
use crate::event_id::EventId;
use crate::metrics::Metrics;
use crate::policy::ChannelPolicies;
use crate::protocol::{self, ChannelName, MAX_CHANNELS_PER_CONNECTION};

fn hub() -> (Arc<Hub>, mpsc::UnboundedReceiver<ChannelName>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = Metrics::new(&mut Registry::default());
    (
        Arc::new(Hub::new(
            Budget::default(),
            metrics,
            SourceLink::OnDemand { interest: tx },
            ChannelPolicies::default(),
        )),
        rx,
    )
}

fn name(n: &str) -> ChannelName {
    ChannelName::new(n).unwrap()
}

fn drained_ids(client: &Client) -> Vec<String> {
    let mut batch = Vec::new();
    client.outbound.drain_into(&mut batch);
    batch
        .iter()
        .map(|e| {
            let (frame, _) = mt_testkit::parse_server_frame(&e.frame).unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// One event reaches every subscriber as the same shared bytes, with increasing ids.
#[test]
fn fan_out_shares_one_encoding() {
    let (hub, _) = hub();
    let a = hub.open_client();
    let b = hub.open_client();
    hub.subscribe(&a, &[name("x")], &[]).unwrap();
    hub.subscribe(&b, &[name("x")], &[]).unwrap();
    assert_eq!(hub.publish(&name("x"), None, b"1", Instant::now()), 2);
    assert_eq!(hub.publish(&name("y"), None, b"1", Instant::now()), 0);
    hub.publish(&name("x"), None, b"2", Instant::now());
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    a.outbound.drain_into(&mut qa);
    b.outbound.drain_into(&mut qb);
    assert!(Arc::ptr_eq(&qa[0], &qb[0]), "the same event object is shared");
    assert_eq!(qa.len(), 2);
    hub.publish(&name("x"), Some(EventId::new(5, 0)), b"3", Instant::now());
    hub.publish(&name("x"), None, b"4", Instant::now());
    let ids: Vec<EventId> = drained_ids(&a).iter().map(|id| id.parse().unwrap()).collect();
    assert_eq!(ids[0], EventId::new(5, 0), "a history id is kept as given");
    assert!(ids[1] > ids[0], "a made-up id follows the channel's last");
}

/// A recovering subscription gets no live events directly; finishing hands over those newer
/// than the replay, then the notice, then it is live. An overflowing buffer asks for more.
#[test]
fn recovery_seam_has_no_gap_and_no_duplicate() {
    let (hub, _) = hub();
    let a = hub.open_client();
    let recovering = hub.subscribe(&a, &[name("x")], &[name("x")]).unwrap();
    assert_eq!(recovering, [name("x")]);
    assert!(hub.has_subscribers(&name("x")), "a recovering subscription keeps the channel wanted");
    for ms in 1..=3 {
        hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
    }
    assert!(drained_ids(&a).is_empty(), "nothing live while recovering");
    // The replay already wrote up to 2-0: only 3-0 is handed over, then the notice.
    let finish = hub.finish_recovery(&a, &name("x"), EventId::new(2, 0), |n| {
        protocol::encode_recovered(&name("x"), EventId::new(0, 0), n, Ok(()))
    });
    assert_eq!(finish, Finish::Live { handed_over: 1 });
    let mut batch = Vec::new();
    a.outbound.drain_into(&mut batch);
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].delivery_id().unwrap().1, EventId::new(3, 0));
    assert!(!batch[1].is_delivery(), "the notice follows the handed-over events");
    hub.publish(&name("x"), Some(EventId::new(4, 0)), b"1", Instant::now());
    assert_eq!(drained_ids(&a), ["4-0"], "live after the seam");
    assert_eq!(hub.finish_recovery(&a, &name("x"), EventId::new(4, 0), |_| Bytes::new()), Finish::Gone);

    // The replay got ahead of live delivery (history had 6-0 and 7-0 before their live
    // messages came): those are skipped when they arrive live, 8-0 goes through.
    let c = hub.open_client();
    hub.subscribe(&c, &[name("x")], &[name("x")]).unwrap();
    assert_eq!(
        hub.finish_recovery(&c, &name("x"), EventId::new(7, 0), |_| Bytes::from_static(b"notice")),
        Finish::Live { handed_over: 0 }
    );
    for ms in 5..=8 {
        hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
    }
    let mut batch = Vec::new();
    c.outbound.drain_into(&mut batch);
    let delivered: Vec<EventId> = batch.iter().filter_map(|e| e.delivery_id()).map(|(_, id)| id).collect();
    assert_eq!(delivered, [EventId::new(8, 0)]);
    assert_eq!(batch.len(), 2, "the notice, then 8-0");
    hub.publish(&name("x"), Some(EventId::new(9, 0)), b"1", Instant::now());
    assert_eq!(drained_ids(&c), ["9-0"], "live from then on");

    let b = hub.open_client();
    hub.subscribe(&b, &[name("y")], &[name("y")]).unwrap();
    let big = vec![b'x'; b.outbound.cap() / 3];
    for ms in 1..=4 {
        hub.publish(&name("y"), Some(EventId::new(ms, 0)), &big, Instant::now());
    }
    assert_eq!(hub.finish_recovery(&b, &name("y"), EventId::new(0, 0), |_| Bytes::new()), Finish::ReadMore);
    assert_eq!(
        hub.finish_recovery(&b, &name("y"), EventId::new(4, 0), |_| Bytes::new()),
        Finish::Live { handed_over: 0 }
    );
    hub.unsubscribe(&b, &[name("y")]);
    assert!(!hub.has_subscribers(&name("y")));
}

/// A channel catching up holds live events back, fans out history first, then hands over
/// the held events newer than the replay; a replay ahead of live skips the live copies.
#[test]
fn catch_up_keeps_order_without_duplicates() {
    let (hub, _) = hub();
    let a = hub.open_client();
    hub.subscribe(&a, &[name("x")], &[]).unwrap();
    hub.publish(&name("x"), Some(EventId::new(1, 0)), b"1", Instant::now());
    assert_eq!(drained_ids(&a), ["1-0"]);
    assert_eq!(hub.begin_catch_up(&name("x")), Some(EventId::new(1, 0)));
    assert_eq!(hub.begin_catch_up(&name("x")), None, "one catch-up at a time");
    hub.publish(&name("x"), Some(EventId::new(4, 0)), b"1", Instant::now());
    assert!(drained_ids(&a).is_empty(), "live events wait during the catch-up");
    for ms in 2..=3 {
        hub.fan_out_caught_up(&name("x"), EventId::new(ms, 0), b"1");
    }
    assert_eq!(hub.finish_catch_up(&name("x"), EventId::new(3, 0)), Finish::Live { handed_over: 1 });
    assert_eq!(drained_ids(&a), ["2-0", "3-0", "4-0"]);

    // History ahead of live: 5-0 and 6-0 came from history before their live copies.
    hub.begin_catch_up(&name("x")).unwrap();
    for ms in 5..=6 {
        hub.fan_out_caught_up(&name("x"), EventId::new(ms, 0), b"1");
    }
    assert_eq!(hub.finish_catch_up(&name("x"), EventId::new(6, 0)), Finish::Live { handed_over: 0 });
    for ms in 5..=7 {
        hub.publish(&name("x"), Some(EventId::new(ms, 0)), b"1", Instant::now());
    }
    assert_eq!(drained_ids(&a), ["5-0", "6-0", "7-0"]);
}

/// The source hears of a channel's first subscriber and of its last one leaving.
#[test]
fn interest_follows_first_and_last_subscriber() {
    let (hub, mut interest) = hub();
    let a = hub.open_client();
    let b = hub.open_client();
    hub.subscribe(&a, &[name("x")], &[]).unwrap();
    hub.subscribe(&b, &[name("x")], &[]).unwrap();
    assert_eq!(interest.try_recv().unwrap(), name("x"));
    assert!(interest.try_recv().is_err(), "second subscriber is no news");
    hub.unsubscribe(&a, &[name("x")]);
    assert!(interest.try_recv().is_err());
    assert!(hub.has_subscribers(&name("x")));
    hub.close_client(&b);
    assert_eq!(interest.try_recv().unwrap(), name("x"));
    assert!(!hub.has_subscribers(&name("x")));
    assert!(hub.channel_names().is_empty());
}

/// The connection cap admits exactly max connections and frees slots on drop.
#[test]
fn admission_respects_the_cap() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let budget = Budget { max_connections: std::num::NonZeroUsize::new(2).unwrap(), ..Budget::default() };
    let hub = Arc::new(Hub::new(
        budget,
        Metrics::new(&mut Registry::default()),
        SourceLink::OnDemand { interest: tx },
        ChannelPolicies::default(),
    ));
    let first = hub.try_admit().expect("slot 1");
    let _second = hub.try_admit().expect("slot 2");
    assert!(hub.try_admit().is_none());
    drop(first);
    assert!(hub.try_admit().is_some());
}

/// A connection may not hold more than the per-connection channel limit.
#[test]
fn channel_limit_per_connection() {
    let (hub, _) = hub();
    let a = hub.open_client();
    let many: Vec<ChannelName> = (0..MAX_CHANNELS_PER_CONNECTION + 1).map(|i| name(&format!("c{i}"))).collect();
    assert!(hub.subscribe(&a, &many, &[]).is_err());
    assert!(a.channels().is_empty(), "nothing subscribed on refusal");
    hub.subscribe(&a, &many[..MAX_CHANNELS_PER_CONNECTION], &[]).unwrap();
    assert_eq!(a.channels().len(), MAX_CHANNELS_PER_CONNECTION);
}

/// A subscribe that arrives after clean-up does not bring a finished connection back.
#[test]
fn no_subscribe_after_close() {
    let (hub, _) = hub();
    let a = hub.open_client();
    hub.close_client(&a);
    hub.subscribe(&a, &[name("x")], &[]).unwrap();
    assert!(!hub.has_subscribers(&name("x")));
    assert!(a.channels().is_empty());
}

/// What a client resuming many channels makes the hub hold is bounded by its own queue cap,
/// for all its channels together and counting each held event's slot: past half the cap, the
/// seam that would pass it lets go (history has those events) and reads further. Everything
/// held is given back when the replays end, and shows in the `queued_bytes` gauge meanwhile.
#[test]
fn held_events_are_bounded_per_client() {
    let (hub, _) = hub();
    let a = hub.open_client();
    let channels: Vec<ChannelName> = (0..64).map(|i| name(&format!("c{i}"))).collect();
    assert_eq!(hub.subscribe(&a, &channels, &channels).unwrap().len(), 64);
    let cap = a.outbound.cap();
    for ms in 1..=300u64 {
        for channel in &channels {
            hub.publish(channel, Some(EventId::new(ms, 0)), &[b'x'; 100], Instant::now());
        }
        assert!(a.outbound.held() <= cap / 2, "held {} of a {} cap after {ms} rounds", a.outbound.held(), cap);
    }
    assert!(a.outbound.held() > cap / 4, "holding works up to the bound: {}", a.outbound.held());
    assert_eq!(hub.metrics.queued_bytes.get(), a.outbound.held() as i64, "held bytes are in the gauge");
    for channel in &channels {
        // An overflowed seam asks for more history first, then ends.
        if hub.finish_recovery(&a, channel, EventId::new(300, 0), |_| Bytes::new()) == Finish::ReadMore {
            assert!(matches!(
                hub.finish_recovery(&a, channel, EventId::new(300, 0), |_| Bytes::new()),
                Finish::Live { .. }
            ));
        }
    }
    assert_eq!(a.outbound.held(), 0, "ended replays give back what they held");
    let mut batch = Vec::new();
    a.outbound.drain_into(&mut batch);
    assert_eq!(hub.metrics.queued_bytes.get(), 0);
}
