//! `loadtest`: drives a running mt-stream hub on 127.0.0.1 and measures it.
//!
//! Scenarios: `steady`, `idle`, `slow`, `ramp`, `churn`, `reconnect` (see loadtest/README.md).
//! Every run is bounded in time and in count, and only talks to loopback addresses.

mod addr;
mod client;
mod procstat;
mod publisher;
mod report;
mod scenarios;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use tokio::sync::watch;

use client::{Ending, WsClient};
use publisher::{Published, Target};
use report::{HubResources, Latency, Summary};
use stats::ClientStats;

/// Longest any scenario may run, whatever the flags say.
const MAX_RUN: Duration = Duration::from_secs(3600);
/// Most clients one run may open.
const MAX_CLIENTS: usize = 20_000;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Steady,
    Idle,
    Slow,
    Ramp,
    Churn,
    Reconnect,
    Resume,
}

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "Load generator for mt-stream (127.0.0.1 only)")]
struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The hub's public address (a loopback address or a name resolving to one: `localhost:8080`).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = addr::loopback_addr)]
    hub: SocketAddr,
    /// The hub's admin address (HTTP publishing when no --redis-url).
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = addr::loopback_addr)]
    admin: SocketAddr,
    /// Bearer token for HTTP publishing.
    #[arg(long, env = "MT_PUBLISH_TOKEN", default_value = "")]
    token: String,
    /// Publish through this Redis (PUBLISH <prefix><channel>) instead of HTTP; a
    /// `redis-cluster://` URL publishes with SPUBLISH (sharded pub/sub), as the hub does there.
    #[arg(long)]
    redis_url: Option<String>,
    /// Redis channel prefix.
    #[arg(long, default_value = "mt:")]
    prefix: String,
    /// With --redis-url: publish with history, through the hub's script (scripts/publish.lua,
    /// XADD + PUBLISH in one step) instead of a plain PUBLISH.
    #[arg(long)]
    history: bool,
    /// The hub's pid, to read its RSS and CPU time from /proc.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Channels the clients spread over (client i listens to channel i mod C).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Events published per second (all channels together).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Event size in bytes (payload).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Seconds to publish (steady, slow, churn, each ramp step) or hold (idle).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Share of clients that stop reading (slow).
    #[arg(long, default_value_t = 0.1)]
    slow_fraction: f64,
    /// Ramp: p99 bound in ms a clean step must stay under.
    #[arg(long, default_value_t = 10.0)]
    p99_bound_ms: f64,
    /// Ramp: rate multiplier per step.
    #[arg(long, default_value_t = 1.5)]
    ramp_factor: f64,
    /// Ramp: most steps.
    #[arg(long, default_value_t = 12)]
    ramp_steps: usize,
    /// Churn: each client stays connected a random time up to this many ms, then reconnects.
    #[arg(long, default_value_t = 1000)]
    churn_max_ms: u64,
    /// Resume: events the hub keeps per channel (its MT_HISTORY_MAX_EVENTS): each client
    /// replays min(this, events published on its channel).
    #[arg(long, default_value_t = 1000)]
    history_max_events: u64,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Connection token (JWT) every client sends as `?token=` (a hub with a verification key).
    #[arg(long)]
    auth_token: Option<String>,
    /// Write the summary as JSON to stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the latency CDF to this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for addr in [args.hub, args.admin] {
        if !addr.ip().is_loopback() {
            bail!("loadtest only talks to loopback addresses; {addr} is not one");
        }
    }
    if let Some(url) = &args.redis_url {
        if !(url.contains("127.0.0.1") || url.contains("localhost") || url.contains("[::1]")) {
            bail!("loadtest only publishes to a Redis on this machine; {url} is not local");
        }
    }
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be 1..={MAX_CLIENTS}");
    }
    if args.channels == 0 || args.channels > args.clients.max(1) * 4 {
        bail!("--channels must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration <= MAX_RUN.as_secs_f64()) {
        bail!("--duration must be in (0, {}] seconds", MAX_RUN.as_secs());
    }
    if !(args.rate >= 0.0 && args.rate <= 2_000_000.0) {
        bail!("--rate must be in [0, 2000000]");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (summary, histogram) = runtime.block_on(scenarios::run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if let Some(failure) = summary.publish_failure(publisher::FIRST_ERROR.get().map(String::as_str)) {
        bail!(failure);
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "mt-stream {} — {} clients, {:.0} ev/s",
            summary.scenario, summary.clients, summary.rate_per_second
        );
        std::fs::write(path, report::latency_svg(&histogram, &title))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("latency plot written to {}", path.display());
    }
    Ok(())
}

fn channel_names(count: usize) -> Vec<String> {
    (0..count).map(|c| format!("lt{c}")).collect()
}

fn target(args: &Args) -> Target {
    match &args.redis_url {
        Some(url) => Target::Redis { url: url.clone(), prefix: args.prefix.clone(), history: args.history },
        None => Target::Http { admin: args.admin, token: args.token.clone() },
    }
}

/// Connects `count` clients, `concurrency` at a time; client i listens to channel i mod C.
async fn connect_all(
    args: &Args,
    count: usize,
    first_index: usize,
    recv_buffer: Option<u32>,
    since: Option<&'static str>,
) -> (Vec<(usize, WsClient)>, u64) {
    let channels = channel_names(args.channels);
    let mut clients = Vec::with_capacity(count);
    let mut failed = 0u64;
    let indexes: Vec<usize> = (first_index..first_index + count).collect();
    for chunk in indexes.chunks(args.connect_concurrency.max(1)) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let channel = channels[i % channels.len()].clone();
                let hub = args.hub;
                let token = args.auth_token.clone();
                tokio::spawn(async move {
                    let result = tokio::time::timeout(
                        Duration::from_secs(10),
                        WsClient::connect(hub, &channel, recv_buffer, since, token.as_deref()),
                    )
                    .await;
                    (i, result)
                })
            })
            .collect();
        for handle in handles {
            match handle.await {
                Ok((i, Ok(Ok(client)))) => clients.push((i % channels.len(), client)),
                Ok((_, Ok(Err(error)))) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("connect failed: {error:#}");
                    }
                }
                _ => failed += 1,
            }
        }
    }
    (clients, failed)
}

/// Samples the hub every 100 ms for its peak RSS, until stopped.
fn watch_peak(pid: Option<u32>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0u64;
        let Some(pid) = pid else { return 0 };
        loop {
            if let Some(sample) = procstat::sample(pid) {
                peak = peak.max(sample.rss_bytes);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return peak,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
}

fn sample(pid: Option<u32>) -> procstat::ProcSample {
    pid.and_then(procstat::sample).unwrap_or_default()
}

/// Prints a one-line progress bar on stderr every second until stopped.
fn progress(
    total: Duration,
    published: Arc<Published>,
    delivered: Arc<std::sync::atomic::AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last_delivered = 0u64;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => { eprintln!(); return; }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let elapsed = start.elapsed();
            let done = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
            let filled = (done * 30.0) as usize;
            let delivered_now = delivered.load(Ordering::Relaxed);
            eprint!(
                "\r[{}{}] {:>5.1}/{:.0}s  published {:>9}  deliveries/s {:>9}   ",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                elapsed.as_secs_f64().min(total.as_secs_f64()),
                total.as_secs_f64(),
                published.events.load(Ordering::Relaxed),
                delivered_now - last_delivered
            );
            last_delivered = delivered_now;
        }
    })
}

/// Runs reading tasks for `clients` until `stop`; returns each client's stats and ending.
fn spawn_readers(
    clients: Vec<(usize, WsClient)>,
    channels: usize,
    stop: watch::Receiver<bool>,
    delivered: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<(usize, ClientStats, Ending, WsClient)>> {
    clients
        .into_iter()
        .map(|(channel, mut client)| {
            let mut stop = stop.clone();
            let delivered = Arc::clone(&delivered);
            tokio::spawn(async move {
                let mut stats = ClientStats::new(channels);
                let ending = client
                    .run(&mut stats, Some(&delivered), async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                (channel, stats, ending, client)
            })
        })
        .collect()
}

/// Publishes for the run's duration and measures the clients and the hub (steady and slow).
async fn measured_run(
    args: &Args,
    rate: f64,
    stalled_share: f64,
) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    let stalled_count = ((args.clients as f64) * stalled_share).round() as usize;
    let fast_count = args.clients - stalled_count;
    let rss_before = sample(args.hub_pid);
    let (fast, mut failed) = connect_all(args, fast_count, 0, None, None).await;
    // Stalled clients shrink their receive buffer so the hub's queue, not the kernel, fills.
    let (stalled, failed_stalled) = connect_all(args, stalled_count, fast_count, Some(4096), None).await;
    failed += failed_stalled;

    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers = spawn_readers(fast, args.channels, stop_rx.clone(), Arc::clone(&delivered));
    let peak = watch_peak(args.hub_pid, stop_rx.clone());
    let published = Arc::new(Published::default());
    let duration = Duration::from_secs_f64(args.duration);
    let bar = progress(duration, Arc::clone(&published), Arc::clone(&delivered), stop_rx.clone());

    let cpu_start = sample(args.hub_pid);
    let started = Instant::now();
    let per_channel =
        publisher::run(target(args), &channel_names(args.channels), rate, args.size, duration, Arc::clone(&published))
            .await?;
    let seconds = started.elapsed().as_secs_f64();
    // Let in-flight events land: stop once the expected count arrived or 3 s passed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut total = ClientStats::new(args.channels);
    for reader in readers {
        let (channel, mut stats, ending, client) = reader.await?;
        if matches!(ending, Ending::Closed(_) | Ending::Eof) {
            failed += 1;
        }
        stats.finish(&per_channel, channel);
        total.merge(&stats);
        client.close().await;
    }
    let cpu_end = sample(args.hub_pid);
    let peak_rss = peak.await.unwrap_or(0);
    bar.await.ok();

    let (mut closed_4008, mut dropped) = (0u64, 0u64);
    let closes: Vec<_> = stalled
        .into_iter()
        .map(|(_, mut client)| tokio::spawn(async move { client.read_until_close(Duration::from_secs(10)).await }))
        .collect();
    for close in closes {
        match close.await {
            Ok(Ending::Closed(4008)) => closed_4008 += 1,
            Ok(Ending::Eof | Ending::Closed(_)) => dropped += 1,
            _ => {}
        }
    }
    let mut summary = Summary {
        scenario: String::new(),
        clients: args.clients,
        channels: args.channels,
        rate_per_second: rate,
        event_bytes: args.size,
        seconds,
        published: published.events.load(Ordering::Relaxed),
        publish_errors: published.errors.load(Ordering::Relaxed),
        deliveries: total.deliveries,
        deliveries_per_second: total.deliveries as f64 / seconds,
        lost: total.lost,
        duplicated: total.duplicated,
        reordered: total.reordered,
        failed_connections: failed,
        latency: Latency::from_histogram(&total.latency_us),
        hub: args.hub_pid.map(|_| HubResources::new(cpu_start, peak_rss, cpu_end, total.deliveries)),
        extra: Vec::new(),
    };
    if let Some(hub) = &mut summary.hub {
        hub.rss_start_mib = rss_before.rss_bytes as f64 / (1 << 20) as f64;
    }
    summary.extra.push(("longest silence on one channel (ms)".into(), total.longest_silence_us as f64 / 1000.0));
    if stalled_count > 0 {
        summary.extra.push(("stalled clients".into(), stalled_count as f64));
        summary.extra.push(("stalled clients closed with a 4008 frame".into(), closed_4008 as f64));
        // A client that never reads again cannot see the close frame behind its full buffers;
        // the hub gives up writing after its close timeout and drops the socket.
        summary.extra.push(("stalled clients dropped without a readable close".into(), dropped as f64));
    }
    Ok((summary, total.latency_us))
}
