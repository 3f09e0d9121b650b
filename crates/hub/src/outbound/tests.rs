//! The queue: byte cap, 4008, conflation, drain order, first close wins, held bytes.

use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::event_id::EventId;
use crate::protocol::{self, ChannelName};

fn event(len: usize) -> Arc<Event> {
    Arc::new(Event { frame: Bytes::from(vec![0u8; len]), received_at: Instant::now(), kind: EventKind::Control })
}

fn delivery(channel: &str, ms: u64, conflate: bool) -> Arc<Event> {
    let channel = ChannelName::new(channel).unwrap();
    let frame = protocol::encode_event(&channel, &EventId::new(ms, 0).to_string(), &[b'x'; 200]);
    Event::delivery(frame, Instant::now(), channel, EventId::new(ms, 0), conflate)
}

/// What the queue holds, as "channel@ms" for deliveries and "skip:channel:count:from-to".
fn contents(queue: &Outbound) -> Vec<String> {
    queue
        .lock()
        .frames
        .iter()
        .map(|e| match &e.kind {
            EventKind::Delivery { channel, id, .. } => format!("{channel}@{}", id.ms),
            EventKind::Skipped(s) => format!("skip:{}:{}:{}-{}", s.channel, s.count, s.from.ms, s.to.ms),
            EventKind::Control => "control".to_owned(),
        })
        .collect()
}

/// A conflated channel keeps only its newest event, announced by one merged notice; other
/// channels' events stay; and a queue of non-conflated events still closes with 4008.
#[test]
fn conflation_keeps_the_newest_per_channel() {
    let gauge = Gauge::default();
    let size = delivery("p", 0, true).frame.len();
    let queue = Outbound::new(size * 4, gauge.clone());
    for (channel, ms, conflate) in [("p", 1, true), ("q", 2, true), ("x", 3, false), ("p", 4, true)] {
        assert_eq!(queue.push(&delivery(channel, ms, conflate)), Push::Queued);
    }
    assert_eq!(queue.push(&delivery("p", 5, true)), Push::Conflated);
    assert_eq!(contents(&queue), ["q@2", "x@3", "skip:p:2:1-4", "p@5"]);
    assert_eq!(gauge.get() as usize, queue.queued());
    // q's older event goes when q needs room; p's notice merges with the next drop of p.
    assert_eq!(queue.push(&delivery("q", 6, true)), Push::Conflated);
    assert_eq!(contents(&queue), ["x@3", "skip:p:2:1-4", "p@5", "skip:q:1:2-2", "q@6"]);
    assert_eq!(queue.push(&delivery("p", 7, true)), Push::Conflated);
    assert_eq!(contents(&queue), ["x@3", "skip:q:1:2-2", "q@6", "skip:p:3:1-5", "p@7"]);
    assert_eq!(queue.close_reason(), None);
    assert_eq!(gauge.get() as usize, queue.queued());

    let strict = Outbound::new(size * 2, Gauge::default());
    strict.push(&delivery("x", 1, false));
    strict.push(&delivery("x", 2, false));
    assert_eq!(strict.push(&delivery("p", 3, true)), Push::Overflowed, "nothing to conflate");
    assert_eq!(strict.close_reason(), Some(Close::SlowConsumer));
}

/// Frames queue up to the cap; the push that passes it closes with 4008 and frees the queue.
#[test]
fn overflow_closes_as_slow_consumer_and_frees_memory() {
    let gauge = Gauge::default();
    let queue = Outbound::new(1000, gauge.clone());
    for _ in 0..10 {
        assert_eq!(queue.push(&event(100)), Push::Queued);
    }
    assert_eq!(gauge.get(), 1000);
    assert_eq!(queue.push(&event(1)), Push::Overflowed);
    assert_eq!(gauge.get(), 0);
    assert_eq!(queue.queued(), 0);
    assert_eq!(queue.close_reason(), Some(Close::SlowConsumer));
    assert_eq!(queue.push(&event(1)), Push::Closed);
}

/// One event bigger than the cap still reaches a client whose queue is empty.
#[test]
fn oversized_event_fits_an_empty_queue() {
    let queue = Outbound::new(100, Gauge::default());
    assert_eq!(queue.push(&event(500)), Push::Queued);
    assert_eq!(queue.push(&event(1)), Push::Overflowed);
}

/// Draining takes everything in order and the gauge follows.
#[test]
fn drain_takes_all_in_order() {
    let gauge = Gauge::default();
    let queue = Outbound::new(10_000, gauge.clone());
    let events: Vec<_> = (1..=5).map(event).collect();
    for e in &events {
        queue.push(e);
    }
    let mut batch = Vec::new();
    let drained = queue.drain_into(&mut batch);
    assert_eq!(drained.bytes, 15);
    assert_eq!(drained.close, None);
    let lens: Vec<usize> = batch.iter().map(|e| e.frame.len()).collect();
    assert_eq!(lens, [1, 2, 3, 4, 5]);
    assert_eq!(gauge.get(), 0);
}

/// The first close reason wins.
#[test]
fn first_close_wins() {
    let queue = Outbound::new(100, Gauge::default());
    assert!(queue.close(Close::Drain));
    assert!(!queue.close(Close::HeartbeatTimeout));
    assert_eq!(queue.close_reason(), Some(Close::Drain));
}

/// A frame already partly written (a write that took only part of it) is on its way: conflation
/// leaves it first and whole, and a close keeps its rest for the writer to finish, so the
/// client never sees a frame cut in two.
#[test]
fn a_begun_frame_survives_conflation_and_close() {
    let gauge = Gauge::default();
    let size = delivery("p", 0, true).frame.len();
    let queue = Outbound::new(size * 3, gauge.clone());
    for ms in 1..=3 {
        assert_eq!(queue.push(&delivery("p", ms, true)), Push::Queued);
    }
    queue.lock().front_written = 10;
    assert_eq!(queue.push(&delivery("p", 4, true)), Push::Conflated);
    assert_eq!(contents(&queue), ["p@1", "skip:p:2:2-3", "p@4"], "p@1 is begun: it stays");
    assert_eq!(queue.lock().front_written, 10);
    assert_eq!(gauge.get() as usize, queue.queued());

    let begun = queue.lock().frames.front().map(|event| event.frame.clone()).unwrap();
    assert!(queue.close(Close::Drain));
    let (unfinished, _) = queue.ending();
    assert_eq!(unfinished.as_deref(), Some(&begun[10..]), "the rest of the begun frame");
    assert_eq!(queue.queued(), 0);
    assert_eq!(gauge.get(), 0);
}

/// `flush` against a real socket whose peer stops reading: writes go straight out until the
/// socket is full (`Blocked`, counted once), a push meanwhile does not ask for a flusher (the
/// writer has it), partial writes resume exactly where they stopped, and once the peer reads
/// again every frame arrives whole and in order, and the last id written is the newest.
#[tokio::test]
async fn flush_keeps_order_across_a_full_socket() {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpSocket::new_v4().unwrap();
    peer.set_recv_buffer_size(4096).unwrap();
    let mut peer = peer.connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
    let (_read_half, write_half) = server.into_split();
    let full = Counter::default();
    let queue = Outbound::new(8 << 20, Gauge::default()).counting_full_sockets(full.clone());
    queue.attach(Arc::new(write_half));

    // Nobody reads: flush after each push until the socket is full (bounded).
    let mut pushed = 0u64;
    let mut stats = FlushStats::default();
    loop {
        pushed += 1;
        let (push, schedule) = queue.push_for_flusher(&delivery("c", pushed, false));
        assert_eq!(push, Push::Queued);
        assert!(schedule, "an empty queue, nobody writing: a flusher is asked for");
        match queue.flush(&mut stats) {
            Flushed::Empty => assert!(pushed < 10_000, "the socket never filled"),
            Flushed::Blocked => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(full.get(), 1);
    for _ in 0..50 {
        pushed += 1;
        let (_, schedule) = queue.push_for_flusher(&delivery("c", pushed, false));
        assert!(!schedule, "the blocked writer writes these");
    }
    assert_eq!(queue.flush(&mut stats), Flushed::Blocked);
    assert_eq!(full.get(), 1, "counted once per time the socket filled");

    // The peer reads everything while the queue is flushed again and again.
    let mut frames = mt_testkit::ServerFrames::new();
    let mut ids = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while (ids.len() as u64) < pushed {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), peer.read(&mut chunk))
            .await
            .expect("the frames keep coming")
            .unwrap();
        assert!(n > 0);
        frames.extend(&chunk[..n]);
        while let Some(frame) = frames.next_frame().expect("whole frames") {
            let message: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
            ids.push(message["id"].as_str().unwrap().to_owned());
        }
        let _ = queue.flush(&mut stats);
    }
    let expected: Vec<String> = (1..=pushed).map(|ms| EventId::new(ms, 0).to_string()).collect();
    assert_eq!(ids, expected, "every frame, once, in order");
    assert_eq!(queue.flush(&mut stats), Flushed::Empty);
    assert_eq!(stats.frames, pushed);
    assert_eq!(stats.deliveries, pushed);
    let (unfinished, last) = queue.ending();
    assert!(unfinished.is_none());
    assert_eq!(last.0.len(), 1);
    assert_eq!(last.0[0].1, EventId::new(pushed, 0));
}
