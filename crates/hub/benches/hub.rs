//! The hub's hot path in isolation: fan-out of one event to 10/100/1000 subscribers, envelope
//! encoding, subscribe/unsubscribe churn on the registry from two threads, the writer's batch
//! drain of an outbound queue, the embedded broker's history append (steady state: every append
//! trims one), a conflating push into a full queue, and the reader decoding client frames
//! (made by the test kit, as a client sends them).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mt_budget::Budget;
use mt_hub::event_id::EventId;
use mt_hub::history::memory::MemoryHistory;
use mt_hub::hub::{Hub, SourceLink};
use mt_hub::inbound::FrameReader;
use mt_hub::metrics::Metrics;
use mt_hub::outbound::{Event, Outbound};
use mt_hub::policy::{ChannelPolicies, HistoryLimits};
use mt_hub::protocol::{self, ChannelName};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

fn hub() -> Arc<Hub> {
    Arc::new(Hub::new(
        Budget::default(),
        Metrics::new(&mut Registry::default()),
        SourceLink::Embedded,
        ChannelPolicies::default(),
    ))
}

fn payload(size: usize) -> Vec<u8> {
    let mut body = String::from("{\"seq\":1,\"pad\":\"");
    body.push_str(&"x".repeat(size.saturating_sub(body.len() + 2)));
    body.push_str("\"}");
    body.into_bytes()
}

/// One event to N subscribers: frame once, push N times, and every writer drains its queue.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    let channel = ChannelName::new("builds").unwrap();
    let event = payload(256);
    for subscribers in [10usize, 100, 1000] {
        let hub = hub();
        let sessions: Vec<_> = (0..subscribers)
            .map(|_| {
                let session = hub.open_client();
                hub.subscribe(&session, std::slice::from_ref(&channel), &[]).unwrap();
                session
            })
            .collect();
        let mut batch = Vec::new();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, _| {
            b.iter(|| {
                black_box(hub.publish(&channel, None, black_box(&event), Instant::now()));
                for session in &sessions {
                    session.outbound.drain_into(&mut batch);
                    batch.clear();
                }
            })
        });
    }
    group.finish();
}

/// The event envelope, JSON payload inlined or text quoted.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_event");
    let channel = ChannelName::new("builds").unwrap();
    for size in [256usize, 4096] {
        let json = payload(size);
        let text = vec![b'a'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("json", size), &json, |b, p| {
            b.iter(|| protocol::encode_event(&channel, "12345", black_box(p)))
        });
        group.bench_with_input(BenchmarkId::new("text", size), &text, |b, p| {
            b.iter(|| protocol::encode_event(&channel, "12345", black_box(p)))
        });
    }
    group.finish();
}

/// Two threads subscribing and unsubscribing their own sessions across 100 shared channels.
fn registry_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_churn");
    let channels: Arc<Vec<ChannelName>> =
        Arc::new((0..100).map(|i| ChannelName::new(&format!("c{i}")).unwrap()).collect());
    group.throughput(Throughput::Elements(2));
    group.bench_function("two_threads_subscribe_unsubscribe", |b| {
        b.iter_custom(|iterations| {
            let hub = hub();
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let hub = Arc::clone(&hub);
                    let channels = Arc::clone(&channels);
                    std::thread::spawn(move || {
                        let session = hub.open_client();
                        for i in 0..iterations as usize {
                            let channel = &channels[(i * 7 + t) % channels.len()];
                            hub.subscribe(&session, std::slice::from_ref(channel), &[]).unwrap();
                            hub.unsubscribe(&session, std::slice::from_ref(channel));
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// The writer's batch drain: 64 queued frames taken in one lock.
fn batch_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_drain");
    let queue = Outbound::new(1 << 30, Gauge::default());
    let event = Event::delivery(
        Bytes::from(vec![0u8; 300]),
        Instant::now(),
        ChannelName::new("bench").unwrap(),
        EventId::new(1, 0),
        false,
    );
    let mut batch = Vec::with_capacity(64);
    group.throughput(Throughput::Elements(64));
    group.bench_function("push_64_drain_once", |b| {
        b.iter(|| {
            for _ in 0..64 {
                queue.push(&event);
            }
            queue.drain_into(&mut batch);
            black_box(batch.len());
            batch.clear();
        })
    });
    group.finish();
}

/// The in-memory history's append at its count limit (1000 kept, so each append trims one).
fn history_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("history_append");
    let history = MemoryHistory::new(HistoryLimits::default(), 1 << 30);
    let channel = ChannelName::new("builds").unwrap();
    let event = Bytes::from(payload(256));
    let mut now_ms = 1_000_000u64;
    for _ in 0..1000 {
        history.append(&channel, event.clone(), now_ms);
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("256B_at_limit", |b| {
        b.iter(|| {
            now_ms += 1;
            black_box(history.append(&channel, event.clone(), now_ms))
        })
    });
    group.finish();
}

/// A push that overflows a queue of one conflated channel: the queue keeps one event.
fn conflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("conflate");
    let channel = ChannelName::new("prices").unwrap();
    let frame = protocol::encode_event(&channel, "1-0", &payload(256));
    let queue = Outbound::new(64 << 10, Gauge::default());
    let mut ms = 0u64;
    let mut next = || {
        ms += 1;
        Event::delivery(frame.clone(), Instant::now(), channel.clone(), EventId::new(ms, 0), true)
    };
    while queue.queued() + frame.len() <= 64 << 10 {
        queue.push(&next());
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("overflowing_push_full_queue", |b| {
        b.iter_batched(
            || {
                // Refill to the cap, so every measured push conflates a full queue.
                while queue.queued() + frame.len() <= 64 << 10 {
                    queue.push(&next());
                }
                next()
            },
            |event| black_box(queue.push(&event)),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Reading client messages: 64 masked `subscribe` frames (built by the test kit, as a client
/// would send them) decoded and unmasked by the hub's reader.
fn read_client_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_client_frames");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime builds");
    let message = r#"{"op":"subscribe","channels":["builds","town:square"]}"#;
    let mut bytes = Vec::new();
    for _ in 0..64 {
        bytes.extend(mt_testkit::client_text(message));
    }
    group.throughput(Throughput::Elements(64));
    group.bench_function("subscribe_x64", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut reader = FrameReader::new(black_box(bytes.as_slice()));
                for _ in 0..64 {
                    black_box(reader.next().await.expect("a valid frame"));
                }
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = fan_out, encode, registry_churn, batch_drain, history_append, conflate, read_client_frames
}
criterion_main!(benches);
