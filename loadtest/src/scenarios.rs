//! The scenarios: each opens its clients, publishes at the asked rate (or not), and measures
//! what the hub delivered, within the run's bounds. `run` picks one from `--scenario`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::WsClient;
use crate::publisher::{self, Published};
use crate::report::{HubResources, Latency, Summary};
use crate::stats::ClientStats;
use crate::{channel_names, connect_all, measured_run, sample, spawn_readers, target, watch_peak, Args, Scenario};
use tokio::sync::watch;

pub async fn run(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    match args.scenario {
        Scenario::Steady => {
            let (mut summary, h) = measured_run(args, args.rate, 0.0).await?;
            summary.scenario = "steady".into();
            Ok((summary, h))
        }
        Scenario::Slow => {
            let (mut summary, h) = measured_run(args, args.rate, args.slow_fraction).await?;
            summary.scenario = "slow".into();
            Ok((summary, h))
        }
        Scenario::Ramp => ramp(args).await,
        Scenario::Idle => idle(args).await,
        Scenario::Churn => churn(args).await,
        Scenario::Reconnect => reconnect(args).await,
        Scenario::Resume => resume(args).await,
    }
}

/// Raises the rate until p99 passes the bound or an event is lost; reports the highest clean rate.
async fn ramp(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let mut rate = args.rate;
    let mut best: Option<(Summary, hdrhistogram::Histogram<u64>)> = None;
    for step in 0..args.ramp_steps {
        let (summary, h) = measured_run(args, rate, 0.0).await?;
        let clean = summary.lost == 0 && summary.latency.p99_ms <= args.p99_bound_ms && summary.failed_connections == 0;
        eprintln!(
            "step {step}: {rate:.0} events/s → {:.0} deliveries/s, p99 {:.2} ms, lost {} {}",
            summary.deliveries_per_second,
            summary.latency.p99_ms,
            summary.lost,
            if clean { "clean" } else { "NOT clean: stop" }
        );
        if !clean {
            break;
        }
        best = Some((summary, h));
        rate *= args.ramp_factor;
    }
    let (mut summary, h) = best.context("not even the first ramp step was clean")?;
    summary.scenario = "ramp (highest clean step)".into();
    summary.extra.push(("highest clean rate, events/s".into(), summary.rate_per_second));
    Ok((summary, h))
}

/// Holds idle connections and reports the hub's memory per connection and CPU while idle.
async fn idle(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let before = sample(args.hub_pid);
    let started = Instant::now();
    let (clients, failed) = connect_all(args, args.clients, 0, None, None).await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = sample(args.hub_pid);
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = clients.len();
    let readers = spawn_readers(clients, args.channels, stop_rx.clone(), delivered);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let held = sample(args.hub_pid);
    let _ = stop_tx.send(true);
    for reader in readers {
        let (_, _, _, client) = reader.await?;
        client.close().await;
    }
    let per_connection_kib = (held.rss_bytes as f64 - before.rss_bytes as f64) / count.max(1) as f64 / 1024.0;
    let summary = Summary {
        scenario: "idle".into(),
        clients: count,
        channels: args.channels,
        seconds: args.duration,
        failed_connections: failed,
        hub: args.hub_pid.map(|_| HubResources::new(before, held.rss_bytes, held, 0)),
        extra: vec![
            ("connect time, s".into(), connect_seconds),
            ("connects per second".into(), count as f64 / connect_seconds.max(1e-9)),
            (
                "hub CPU per connect (upgrade, token check, subscribe), µs".into(),
                (connected.cpu_seconds - before.cpu_seconds) * 1e6 / count.max(1) as f64,
            ),
            ("hub RSS per idle connection, KiB".into(), per_connection_kib),
            ("hub CPU while idle, s".into(), held.cpu_seconds - connected.cpu_seconds),
        ],
        ..Summary::default()
    };
    Ok((summary, hdrhistogram::Histogram::new(3)?))
}

/// Clients connect and disconnect continuously while events flow; reports whether memory comes back.
async fn churn(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let before = sample(args.hub_pid);
    let duration = Duration::from_secs_f64(args.duration);
    let (stop_tx, stop_rx) = watch::channel(false);
    let peak = watch_peak(args.hub_pid, stop_rx.clone());
    let published = Arc::new(Published::default());
    let publisher = {
        let (target, channels, rate, size, published) =
            (target(args), channel_names(args.channels), args.rate, args.size, Arc::clone(&published));
        tokio::spawn(async move { publisher::run(target, &channels, rate, size, duration, published).await })
    };
    let deadline = tokio::time::Instant::now() + duration;
    // RSS once the churn is in full swing (after a tenth of the run), and at its end while
    // clients are still connected: growth between the two would be a leak.
    let warm_sampler = {
        let pid = args.hub_pid;
        tokio::spawn(async move {
            tokio::time::sleep(duration / 10).await;
            let warm = sample(pid);
            tokio::time::sleep_until(deadline - Duration::from_millis(200)).await;
            (warm, sample(pid))
        })
    };
    let mut slots = Vec::new();
    for slot in 0..args.clients {
        let hub = args.hub;
        let channel = channel_names(args.channels)[slot % args.channels].clone();
        let max_ms = args.churn_max_ms.max(10);
        let channels = args.channels;
        let token = args.auth_token.clone();
        slots.push(tokio::spawn(async move {
            let mut connections = 0u64;
            let mut failed = 0u64;
            let mut stats = ClientStats::new(channels);
            let mut rng = mt_testkit::Rng::new(slot as u64 * 0x9E37_79B9 + 1);
            while tokio::time::Instant::now() < deadline {
                let hold = Duration::from_millis(10 + rng.below(max_ms));
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    WsClient::connect(hub, &channel, None, None, token.as_deref()),
                )
                .await
                {
                    Ok(Ok(mut client)) => {
                        connections += 1;
                        let until = tokio::time::sleep_until((tokio::time::Instant::now() + hold).min(deadline));
                        client.run(&mut stats, None, until).await;
                        client.close().await;
                    }
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (connections, failed, stats)
        }));
    }
    let mut total = ClientStats::new(args.channels);
    let (mut connections, mut failed) = (0u64, 0u64);
    for slot in slots {
        let (c, f, stats) = slot.await?;
        connections += c;
        failed += f;
        // Sequence gaps are expected while a client is away; only latency and counts matter here.
        total.deliveries += stats.deliveries;
        let _ = total.latency_us.add(&stats.latency_us);
    }
    let _ = publisher.await?;
    let (warm, late) = warm_sampler.await?;
    // Give the hub a moment to finish closing, then read where memory settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let after = sample(args.hub_pid);
    let peak_rss = peak.await.unwrap_or(0);
    let summary = Summary {
        scenario: "churn".into(),
        clients: args.clients,
        channels: args.channels,
        rate_per_second: args.rate,
        event_bytes: args.size,
        seconds: args.duration,
        published: published.events.load(Ordering::Relaxed),
        publish_errors: published.errors.load(Ordering::Relaxed),
        deliveries: total.deliveries,
        deliveries_per_second: total.deliveries as f64 / args.duration,
        failed_connections: failed,
        latency: Latency::from_histogram(&total.latency_us),
        hub: args.hub_pid.map(|_| HubResources::new(before, peak_rss, after, total.deliveries)),
        extra: vec![
            ("connections made".into(), connections as f64),
            ("hub RSS after 10% of the run, MiB".into(), warm.rss_bytes as f64 / (1 << 20) as f64),
            ("hub RSS just before the end, MiB".into(), late.rss_bytes as f64 / (1 << 20) as f64),
            (
                "hub RSS growth from 10% to the end, %".into(),
                if warm.rss_bytes > 0 { (late.rss_bytes as f64 / warm.rss_bytes as f64 - 1.0) * 100.0 } else { 0.0 },
            ),
            (
                "hub RSS after all disconnected vs after 10%, %".into(),
                if warm.rss_bytes > 0 { (after.rss_bytes as f64 / warm.rss_bytes as f64 - 1.0) * 100.0 } else { 0.0 },
            ),
        ],
        ..Summary::default()
    };
    Ok((summary, total.latency_us))
}

/// Publishes a backlog while no client is connected, then connects every client at once with
/// `since=0-0` and measures how long until each has replayed its channel's whole history.
async fn resume(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let channels = channel_names(args.channels);
    let published = Arc::new(Published::default());
    let duration = Duration::from_secs_f64(args.duration);
    let per_channel =
        publisher::run(target(args), &channels, args.rate, args.size, duration, Arc::clone(&published)).await?;
    let start = sample(args.hub_pid);
    let (stop_tx, stop_rx) = watch::channel(false);
    let peak = watch_peak(args.hub_pid, stop_rx.clone());
    let started = Instant::now();
    let (clients, failed) = connect_all(args, args.clients, 0, None, Some("0-0")).await;
    let expected: u64 = clients.iter().map(|(channel, _)| per_channel[*channel].min(args.history_max_events)).sum();
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers = spawn_readers(clients, args.channels, stop_rx, Arc::clone(&delivered));
    // Bounded: at most 120 s for the replay, checked every 10 ms.
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replay_seconds = started.elapsed().as_secs_f64();
    let end = sample(args.hub_pid);
    let _ = stop_tx.send(true);
    let peak_rss = peak.await?;
    let mut total = ClientStats::new(args.channels);
    let mut complete = 0usize;
    for reader in readers {
        let (channel, stats, _, client) = reader.await?;
        if stats.deliveries >= per_channel[channel].min(args.history_max_events) {
            complete += 1;
        }
        total.merge(&stats);
        client.close().await;
    }
    let summary = Summary {
        scenario: "resume".into(),
        clients: args.clients,
        channels: args.channels,
        rate_per_second: args.rate,
        event_bytes: args.size,
        seconds: replay_seconds,
        published: published.events.load(Ordering::Relaxed),
        publish_errors: published.errors.load(Ordering::Relaxed),
        deliveries_per_second: total.deliveries as f64 / replay_seconds,
        failed_connections: failed,
        deliveries: total.deliveries,
        hub: Some(HubResources::new(start, peak_rss, end, total.deliveries)),
        extra: vec![
            ("events to replay, all clients".into(), expected as f64),
            ("clients that replayed their whole backlog".into(), complete as f64),
            ("connect + replay, s".into(), replay_seconds),
        ],
        ..Summary::default()
    };
    Ok((summary, total.latency_us))
}

/// Drops every client at once and measures how long until all are served again.
async fn reconnect(args: &Args) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let (clients, failed_first) = connect_all(args, args.clients, 0, None, None).await;
    let count = clients.len();
    drop(clients); // every socket closes at once
    let started = Instant::now();
    let (clients, failed) = connect_all(args, count, 0, None, None).await;
    let reconnected = started.elapsed().as_secs_f64();
    // Served again = each client receives an event published after it reconnected.
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers = spawn_readers(clients, args.channels, stop_rx, Arc::clone(&delivered));
    let published = Arc::new(Published::default());
    let rate = (args.channels as f64 * 10.0).max(args.rate);
    publisher::run(
        target(args),
        &channel_names(args.channels),
        rate,
        args.size,
        Duration::from_millis(500),
        Arc::clone(&published),
    )
    .await?;
    // In-flight events land within milliseconds on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut served = 0usize;
    let mut total = ClientStats::new(args.channels);
    for reader in readers {
        let (_, stats, _, client) = reader.await?;
        if stats.deliveries > 0 {
            served += 1;
        }
        total.merge(&stats);
        client.close().await;
    }
    let all_served = started.elapsed().as_secs_f64();
    let summary = Summary {
        scenario: "reconnect".into(),
        clients: count,
        channels: args.channels,
        failed_connections: failed_first + failed,
        deliveries: total.deliveries,
        latency: Latency::from_histogram(&total.latency_us),
        extra: vec![
            ("all reconnected and subscribed, s".into(), reconnected),
            ("clients served an event after reconnecting".into(), served as f64),
            ("until all served (incl. 0.5 s publish window), s".into(), all_served),
        ],
        ..Summary::default()
    };
    Ok((summary, total.latency_us))
}
